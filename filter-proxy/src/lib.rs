//! The HTTP/HTTPS URI-filtering proxy: transparent (diverted tcp/80, tcp/443 by SNI) and explicit (absolute-form, CONNECT).

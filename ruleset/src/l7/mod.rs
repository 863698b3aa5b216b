//! The proxy's L7 matcher: `igw_core::Policy` compiled once into a [`Matcher`] that every
//! connection shares (the proxy holds it in an `Arc` and swaps it whole on reload).
//!
//! # Precedence (what operators can predict)
//!
//! 1. The tenant is the one whose subnets contain the source address; a source in no
//!    tenant is refused (`no-tenant`), whatever the rules say.
//! 2. Among the rules that apply to that tenant (`tenants` empty or naming it), the
//!    **first rule in file order whose every condition holds decides** (allow or deny),
//!    like a firewall: reading the file top-down tells what happens. So put narrow denies
//!    (`/admin/` of an allowed site) above the broad allow of that site.
//! 3. When no rule matches, `[defaults] l7` decides (`deny` unless set).
//!
//! # Conditions of one rule (all that are set must hold; within a list, any entry)
//!
//! - `domains`: the normalised host equals a name, or is at or below a `*.suffix`
//!   (`*.x.y` matches `x.y` and every name under it). IP literals are compared in their
//!   canonical text, so `3232235521` is `192.168.0.1`.
//! - `path_prefixes`: the normalised path (percent-decoded, dot segments removed,
//!   `//` collapsed) starts with the prefix, byte for byte. A tunnel (CONNECT, TLS by SNI)
//!   has no visible path, so a rule with path prefixes never matches it.
//! - `regex`: one of the rule's expressions matches the URL
//!   `scheme://host[:port]/normalised/path[?query]` (port only if not the scheme's
//!   default); for a tunnel the URL is `https://host[:port]` (no path). All expressions of
//!   all rules run as one set.
//! - `methods`: the request method; a tunnel's method is `CONNECT` (explicit) or none
//!   (transparent TLS, where a rule with methods cannot match).
//! - `ports`: the destination port. Without `ports`, a **deny** rule covers every port,
//!   while an **allow** rule only allows the standard port (80 for HTTP, 443 for
//!   tunnels): allowing a name must not open every port of it, and a deny must not be
//!   escaped by changing the port.
//! - `cidrs`: in a rule with neither domains nor regex, the destination address (the IP
//!   literal, the resolved address, or the original destination in transparent mode)
//!   must be inside one of them. In any rule, they also exempt those networks from the
//!   proxy's SSRF guard (which otherwise refuses internal and reserved destinations).
//!
//! Lookup cost does not grow with the number of rules: exact names are one hash lookup,
//! suffixes one lookup per label of the host, regexes one pass of one automaton.

pub mod matcher;
pub mod normalize;

pub use matcher::{
    CompileError, DecidedBy, Decision, HttpPart, Matcher, Query, RuleInfo, TunnelKind,
};
pub use normalize::{Host, NormError, canonical_ip, normalize_path, parse_authority};

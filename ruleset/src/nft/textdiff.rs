//! A line diff (longest common subsequence) for `igw ruleset diff`: rulesets are a few
//! hundred lines once set contents are left out, so the quadratic table is small.

/// `-` for lines only in `old`, `+` for lines only in `new`, two spaces for common lines.
pub fn diff_lines(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::diff_lines;

    #[test]
    fn cases() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("a\nb\n", "a\nb\n", &["  a", "  b"]),
            ("a\nb\n", "a\nc\n", &["  a", "- b", "+ c"]),
            ("", "x\n", &["+ x"]),
            ("x\n", "", &["- x"]),
            ("a\nb\nc\n", "a\nc\n", &["  a", "- b", "  c"]),
        ];
        for (old, new, want) in cases {
            assert_eq!(diff_lines(old, new), *want, "{old:?} -> {new:?}");
        }
    }
}

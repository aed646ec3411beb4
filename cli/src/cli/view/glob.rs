//! A small glob matcher for the filter box: `*` (any run, `/` included), `?` (one
//! character), `[abc]`, `[a-z]`, `[!x]`. Matches the whole path.

/// Whether the text is a glob (has `*`, `?` or `[`).
pub(crate) fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// Whether `pat` matches all of `s`.
pub(crate) fn matches(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let s: Vec<char> = s.chars().collect();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
            continue;
        }
        if pi < p.len() {
            if let Some(next) = one(&p, pi, s[si]) {
                pi = next;
                si += 1;
                continue;
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// If the pattern item at `pi` matches `c`, the index after that item.
fn one(p: &[char], pi: usize, c: char) -> Option<usize> {
    match p[pi] {
        '?' => Some(pi + 1),
        '[' => class(p, pi, c),
        lit => (lit == c).then_some(pi + 1),
    }
}

/// A `[...]` class at `pi`; an unclosed `[` is a literal.
fn class(p: &[char], pi: usize, c: char) -> Option<usize> {
    let mut i = pi + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let start = i;
    let mut hit = false;
    while i < p.len() && (p[i] != ']' || i == start) {
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            hit |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    if i >= p.len() {
        return (c == '[').then_some(pi + 1);
    }
    (hit != negate).then_some(i + 1)
}

/// The literal runs of a glob (what the path column highlights for it).
pub(crate) fn literals(pat: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_class = false;
    for c in pat.chars() {
        match c {
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            _ if in_class => {}
            '*' | '?' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
        if in_class && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_paths() {
        assert!(matches("*.rs", "/a/b/main.rs"));
        assert!(!matches("*.rs", "/a/b/main.rsx"));
        assert!(matches("/a/?/c", "/a/b/c"));
        assert!(matches("*file-[0-9]*", "/t/file-7.txt"));
        assert!(!matches("*file-[!0-9]*", "/t/file-7.txt"));
        assert!(matches("*", ""));
        assert!(matches("a[", "a["));
        assert!(is_glob("a*") && !is_glob("abc"));
        assert_eq!(literals("/t/*file-[0-9].txt"), ["/t/", "file-", ".txt"]);
    }
}

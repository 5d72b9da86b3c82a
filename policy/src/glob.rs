//! Wildcard patterns (`*` any run of characters, `?` one character), as in
//! AWS's `StringLike` and action names.
//!
//! Matching is the two-pointer algorithm with a single backtrack point (the
//! last `*` seen), never recursion: when a literal run after a `*` fails,
//! only that run is retried one input character further on, and every
//! earlier `*` is final. So a match costs at most about
//! `(input length + 1) * (longest run between stars + 1) + pattern length`
//! steps, linear in the input for a pattern whose runs the document limits
//! bound (`MAX_STRING_BYTES`). A recursive matcher is exponential on
//! `a*a*a*...b` against `aaaa...`; the test `pathological_pattern_is_linear`
//! counts this one's steps on exactly that.

/// One element of a compiled pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`: exactly one character.
    One,
    /// `*`: any run of characters, possibly empty. Never two in a row.
    Star,
}

/// A compiled wildcard pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles `pattern`; consecutive stars are one star.
    pub(crate) fn new(pattern: &str) -> Self {
        let mut tokens = Vec::with_capacity(pattern.len());
        for c in pattern.chars() {
            let t = match c {
                '*' => Token::Star,
                '?' => Token::One,
                c => Token::Char(c),
            };
            if t == Token::Star && tokens.last() == Some(&Token::Star) {
                continue;
            }
            tokens.push(t);
        }
        Glob { tokens }
    }

    /// How many `*` and `?` the pattern has (after merging stars).
    pub(crate) fn wildcards(&self) -> usize {
        self.tokens
            .iter()
            .filter(|t| !matches!(t, Token::Char(_)))
            .count()
    }

    /// Whether `s` matches the whole pattern.
    pub(crate) fn matches(&self, s: &str) -> bool {
        self.matches_counted(s, &mut 0)
    }

    /// [`Glob::matches`], adding one to `steps` per comparison or
    /// backtrack, so that a test can check the bound above.
    pub(crate) fn matches_counted(&self, s: &str, steps: &mut u64) -> bool {
        let t = &self.tokens;
        // `si` is a byte offset into `s`, `pi` an index into the tokens.
        let (mut si, mut pi) = (0usize, 0usize);
        // The last star: the token after it and the input offset it has
        // absorbed up to.
        let mut star: Option<(usize, usize)> = None;
        loop {
            *steps += 1;
            let c = s[si..].chars().next();
            match (c, t.get(pi)) {
                (_, Some(Token::Star)) => {
                    pi += 1;
                    star = Some((pi, si));
                    continue;
                }
                (Some(c), Some(Token::One)) => {
                    si += c.len_utf8();
                    pi += 1;
                    continue;
                }
                (Some(c), Some(Token::Char(p))) if c == *p => {
                    si += c.len_utf8();
                    pi += 1;
                    continue;
                }
                (None, None) => return true,
                _ => {}
            }
            // Mismatch (or one side ended): let the last star absorb one
            // more character and retry the run after it.
            match star {
                Some((after, absorbed)) => match s[absorbed..].chars().next() {
                    Some(c) => {
                        let absorbed = absorbed + c.len_utf8();
                        star = Some((after, absorbed));
                        pi = after;
                        si = absorbed;
                    }
                    None => return false,
                },
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    /// An obviously correct (and exponential) matcher to compare against.
    fn naive(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|i| naive(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && naive(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && naive(&p[1..], &s[1..]),
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything", true),
            ("?", "", false),
            ("?", "é", true),
            ("?", "ab", false),
            ("a*c", "abbbc", true),
            ("a*c", "abbbcd", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("alias/*test*", "alias/my-test-key", true),
            ("alias/*test*", "alias/prod", false),
            ("*.service", "kmsd.service", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("**a", "ba", true),
            ("ab*", "a", false),
            ("Abc", "abc", false),
        ];
        for &(p, s, want) in cases {
            assert_eq!(Glob::new(p).matches(s), want, "{p:?} against {s:?}");
            let (pc, sc): (Vec<char>, Vec<char>) = (p.chars().collect(), s.chars().collect());
            assert_eq!(naive(&pc, &sc), want, "naive {p:?} against {s:?}");
        }
    }

    #[test]
    fn agrees_with_naive_on_small_inputs() {
        // Every pattern and input over {a, b, *, ?} up to length 5 / 6.
        fn all(alphabet: &[char], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                let next: Vec<String> = last
                    .iter()
                    .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                    .collect();
                out.extend(next.iter().cloned());
                last = next;
            }
            out
        }
        let patterns = all(&['a', 'b', '*', '?'], 5);
        let inputs = all(&['a', 'b'], 6);
        for p in &patterns {
            let g = Glob::new(p);
            let pc: Vec<char> = p.chars().collect();
            for s in &inputs {
                let sc: Vec<char> = s.chars().collect();
                assert_eq!(g.matches(s), naive(&pc, &sc), "{p:?} against {s:?}");
            }
        }
    }

    #[test]
    fn pathological_pattern_is_linear() {
        // `a*a*...*a*b` (40 stars) against 100,000 a's: a backtracking
        // matcher tries every way of splitting the input among the stars.
        let pattern = format!("{}b", "a*".repeat(40));
        let input = "a".repeat(100_000);
        let mut steps = 0u64;
        assert!(!Glob::new(&pattern).matches_counted(&input, &mut steps));
        // Each input character is absorbed by the last star once and
        // compared against the run after it (one `a`) once more.
        let bound = 4 * (input.len() as u64 + pattern.len() as u64);
        assert!(steps <= bound, "{steps} steps, bound {bound}");
        // And the count is real: the input's length is a lower bound.
        assert!(steps >= input.len() as u64);

        // The same with a long literal run after the last star: the work
        // is input length times the run's length, no more.
        let run = "a".repeat(50);
        let pattern = format!("*{run}b");
        let mut steps = 0u64;
        assert!(!Glob::new(&pattern).matches_counted(&input, &mut steps));
        let bound = (input.len() as u64 + 1) * (run.len() as u64 + 3);
        assert!(steps <= bound, "{steps} steps, bound {bound}");
    }
}

//! Path normalisation for route matching (README, "What the gate does, precisely"; docs/security.md §3). Pure: no IO, no clock.
//!
//! Input: the request-target's path exactly as the client sent it (no query). Output: either the
//! raw path itself, borrowed ([`Normalized::Clean`], the hot path: nothing is allocated), or one or
//! more *readings* of it as lists of decoded segments ([`Normalized::Readings`]), most plausible
//! first. The request is always forwarded with its original bytes; this only decides matching.
//!
//! Segments are always split on `/`, empty segments are dropped (so `//` collapses and one — or
//! any — trailing slash is ignored: gin redirects `/x/` to `/x`), and matching is case-sensitive.
//!
//! **Clean path.** A path with no `%`, no `\`, no NUL, no `.`/`..` segment and no `//` needs no
//! decoding: its segments are borrowed straight from the raw string.
//!
//! **Readings (fail closed).** Otherwise the path is decoded under every plausible interpretation,
//! and the route table tries each reading in order; the first reading that matches any route wins.
//! The primary reading is what the upstream (Go `net/url` + gin, matching on `URL.Path`) sees:
//! - every valid `%XX` escape is decoded, including `%2F` (which then separates segments, as in
//!   gin's default `UseRawPath = false`) and `%2E` (so `%2e%2e` is a dot segment);
//! - a malformed escape (`%zz`, `%4`) is kept literally (Go would reject the request anyway);
//! - invalid UTF-8 after decoding is replaced by U+FFFD (it can then only match a `{param}`,
//!   exactly as the raw bytes would, since pattern literals are valid UTF-8);
//! - dot segments are removed the way Go's `path.Clean` does (collapse slashes, then `.`/`..`);
//!   `..` above the root stays at the root.
//!
//! Alternative readings are added only when the path contains the ambiguous feature:
//! - `%2F` present: `%2F` kept as a `/` *inside* its segment (servers using the raw path);
//! - `\` or `%5C` present: backslash treated as a separator too (Windows-style servers);
//! - NUL (`%00`) present: the path truncated at the first NUL (C-string consumers);
//! - a `.` present: dot segments removed per RFC 3986 §5.2.4 *before* collapsing slashes
//!   (`/a//../b` → `/a/b` rather than `/b`), and dot segments kept as literal segments (gin itself
//!   does not clean paths, so `/workspaces/..` reaches it with id `..`);
//! - `//` or `%2F` present: gin's exact reading, empty segments kept, so that `/orgs//plugins`
//!   matches `/orgs/{id}/plugins` with an empty id, as gin dispatches it.
//!
//! Every combination of the relevant alternatives is produced (at most 24, deduplicated); double
//! encoding (`%252e`) is decoded once only, like the upstream.

use std::borrow::Cow;

/// A request path prepared for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalized<'a> {
    /// The raw path needed no decoding; segments are borrowed from it (see `clean_segments`).
    Clean(&'a str),
    /// Decoded segment lists, most plausible reading first (never empty).
    Readings(Vec<Vec<String>>),
}

/// Whether `raw` must be decoded before matching (`false` = the allocation-free fast path).
///
/// One pass over the bytes (this runs on every request while the gate is on): a `.` only
/// matters when it starts a segment and the segment is `.` or `..`.
pub(super) fn needs_normalisation(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' | b'\\' | 0 => return true,
            // An empty segment inside the path: gin matches `{param}` against it.
            b'/' if b.get(i + 1) == Some(&b'/') => return true,
            b'.' if i == 0 || b[i - 1] == b'/' => {
                let dots = if b.get(i + 1) == Some(&b'.') { 2 } else { 1 };
                if matches!(b.get(i + dots), None | Some(b'/')) {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// The segments of a clean path: split on `/`, empty segments (repeated or trailing slashes) dropped.
pub(crate) fn clean_segments(path: &str) -> impl Iterator<Item = &str> + Clone {
    path.split('/').filter(|s| !s.is_empty())
}

/// Prepare `raw` for matching; see the module doc for the readings produced.
pub fn normalise(raw: &str) -> Normalized<'_> {
    if !needs_normalisation(raw) {
        return Normalized::Clean(raw);
    }
    let mut out: Vec<Vec<String>> = Vec::new();
    for reading in Reading::all_for(raw) {
        let segs = reading.apply(raw);
        if !out.contains(&segs) {
            out.push(segs);
        }
    }
    Normalized::Readings(out)
}

/// The canonical form of `raw` under the primary reading, e.g. for logs: `/a/b`, or `/` when empty.
pub fn canonical(raw: &str) -> Cow<'_, str> {
    let segs: Vec<Cow<'_, str>> = match normalise(raw) {
        Normalized::Clean(p)
            if p.starts_with('/') && !p.contains("//") && (p == "/" || !p.ends_with('/')) =>
        {
            return Cow::Borrowed(p)
        }
        Normalized::Clean(p) => clean_segments(p).map(Cow::Borrowed).collect(),
        Normalized::Readings(mut r) => r.swap_remove(0).into_iter().map(Cow::Owned).collect(),
    };
    Cow::Owned(format!("/{}", segs.join("/")))
}

/// The decoded path of `raw` when it has exactly one reading — the one the upstream (Go
/// `net/url`, gin, which does not clean paths) acts on — or what makes it ambiguous.
///
/// A gated caller's request must have a plain path: the gate decides on the path it then
/// forwards, and no upstream could route it differently. Not plain: an empty segment (`//`, a
/// trailing `/`: gin redirects), a `.`/`..` segment (encoded or not: gin keeps them, cleaning
/// proxies remove them), a `\` or `%5C`, an encoded `/` (`%2F`: gin splits on it, raw-path
/// routers do not), a NUL, a malformed escape (Go answers 400), or bytes that are not UTF-8
/// once decoded (they could only be shown and hashed lossily). Unreserved escapes such as `%41`
/// are fine: every reading decodes them alike.
pub fn plain(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    if !raw.starts_with('/') {
        return Err("not an absolute path");
    }
    if raw == "/" {
        return Ok(Cow::Borrowed(raw));
    }
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    for seg in raw[1..].split('/') {
        if seg.is_empty() {
            return Err("an empty segment (`//` or a trailing `/`)");
        }
        let start = decoded.len();
        decoded.push(b'/');
        let b = seg.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let byte = match b[i] {
                b'%' => {
                    let byte = decode_escape(b, i).ok_or("a malformed `%` escape")?;
                    i += 3;
                    if byte == b'/' {
                        return Err("an encoded slash (`%2F`)");
                    }
                    byte
                }
                other => {
                    i += 1;
                    other
                }
            };
            match byte {
                b'\\' => return Err("a backslash"),
                0 => return Err("a NUL byte"),
                _ => decoded.push(byte),
            }
        }
        if matches!(&decoded[start + 1..], b"." | b"..") {
            return Err("a dot segment (`.` or `..`)");
        }
    }
    if !raw.contains('%') {
        return Ok(Cow::Borrowed(raw));
    }
    String::from_utf8(decoded)
        .map(Cow::Owned)
        .map_err(|_| "bytes that are not UTF-8 once decoded")
}

/// How dot segments are treated in one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dots {
    /// Go `path.Clean`: drop empty segments, then resolve `.`/`..`.
    Clean,
    /// RFC 3986 §5.2.4 on the raw segment list (empty segments count), then drop empties.
    Rfc,
    /// No dot removal: `.`/`..` are literal segments.
    Kept,
}

/// One interpretation of an ambiguous path.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// `%2F` separates segments (the upstream's view) rather than staying inside one.
    encoded_slash_splits: bool,
    /// `\` and `%5C` separate segments.
    backslash_splits: bool,
    /// The path ends at the first NUL.
    nul_ends: bool,
    dots: Dots,
    /// Empty segments are kept (gin's exact reading): only the piece before the leading `/`
    /// is dropped.
    keep_empty: bool,
}

impl Reading {
    /// Every combination of the alternatives relevant to `raw`, primary reading first.
    fn all_for(raw: &str) -> Vec<Reading> {
        let lower = raw.to_ascii_lowercase();
        let slash: &[bool] = if lower.contains("%2f") {
            &[true, false]
        } else {
            &[true]
        };
        let back: &[bool] = if raw.contains('\\') || lower.contains("%5c") {
            &[false, true]
        } else {
            &[false]
        };
        let nul: &[bool] = if raw.contains('\0') || lower.contains("%00") {
            &[false, true]
        } else {
            &[false]
        };
        let dots: &[Dots] = if raw.contains('.') || lower.contains("%2e") {
            &[Dots::Clean, Dots::Rfc, Dots::Kept]
        } else {
            &[Dots::Clean]
        };
        let mut all = Vec::new();
        for &dots in dots {
            for &nul_ends in nul {
                for &backslash_splits in back {
                    for &encoded_slash_splits in slash {
                        all.push(Reading {
                            encoded_slash_splits,
                            backslash_splits,
                            nul_ends,
                            dots,
                            keep_empty: false,
                        });
                    }
                }
            }
        }
        if raw.contains("//") || lower.contains("%2f") {
            all.push(Reading {
                encoded_slash_splits: true,
                backslash_splits: false,
                nul_ends: false,
                dots: Dots::Kept,
                keep_empty: true,
            });
        }
        all
    }

    /// Decode `raw` under this reading into its final segment list.
    fn apply(self, raw: &str) -> Vec<String> {
        let pieces = self.split_decoded(raw);
        if self.keep_empty {
            let skip = usize::from(raw.starts_with('/'));
            return pieces
                .into_iter()
                .skip(skip)
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .collect();
        }
        let mut segs: Vec<String> = Vec::with_capacity(pieces.len());
        for piece in pieces {
            let s = String::from_utf8_lossy(&piece).into_owned();
            match (self.dots, s.as_str()) {
                (Dots::Clean, "") => {}
                (Dots::Clean | Dots::Rfc, ".") => {}
                (Dots::Clean | Dots::Rfc, "..") => {
                    segs.pop();
                }
                _ => segs.push(s),
            }
        }
        segs.retain(|s| !s.is_empty());
        segs
    }

    /// Percent-decode and split into raw pieces (empty pieces kept: RFC dot removal counts them).
    fn split_decoded(self, raw: &str) -> Vec<Vec<u8>> {
        let bytes = raw.as_bytes();
        let mut pieces: Vec<Vec<u8>> = vec![Vec::new()];
        let mut i = 0;
        while i < bytes.len() {
            let (byte, escaped) = match decode_escape(bytes, i) {
                Some(b) => (b, true),
                None => (bytes[i], false),
            };
            i += if escaped { 3 } else { 1 };
            if byte == 0 && self.nul_ends {
                break;
            }
            let separates = (byte == b'/' && (!escaped || self.encoded_slash_splits))
                || (byte == b'\\' && self.backslash_splits);
            if separates {
                pieces.push(Vec::new());
            } else if let Some(last) = pieces.last_mut() {
                last.push(byte);
            }
        }
        pieces
    }
}

/// The byte encoded by a valid `%XX` escape at `bytes[i]`, if there is one.
fn decode_escape(bytes: &[u8], i: usize) -> Option<u8> {
    if bytes.get(i) != Some(&b'%') {
        return None;
    }
    let hi = (*bytes.get(i + 1)? as char).to_digit(16)?;
    let lo = (*bytes.get(i + 2)? as char).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(raw: &str) -> Vec<Vec<String>> {
        match normalise(raw) {
            Normalized::Clean(p) => vec![clean_segments(p).map(str::to_owned).collect()],
            Normalized::Readings(r) => r,
        }
    }

    #[test]
    fn clean_paths_take_the_borrowing_fast_path() {
        for raw in [
            "/",
            "/workspaces/x",
            "/workspaces/x/",
            "/a.b/.c/..d",
            "/workspaces/x?",
        ] {
            assert!(!needs_normalisation(raw), "{raw}");
            assert_eq!(normalise(raw), Normalized::Clean(raw));
        }
        assert!(matches!(
            canonical("/workspaces/x"),
            Cow::Borrowed("/workspaces/x")
        ));
        assert!(matches!(canonical("/"), Cow::Borrowed("/")));
    }

    /// The one-pass check agrees with its definition: a `%`, `\\` or NUL anywhere, or a
    /// segment that is exactly `.` or `..`.
    #[test]
    fn the_fast_check_matches_its_definition() {
        let by_definition = |raw: &str| {
            raw.bytes().any(|b| matches!(b, b'%' | b'\\' | 0))
                || raw.split('/').any(|s| s == "." || s == "..")
                || raw.contains("//")
        };
        let alphabet = ['/', '.', 'a', '%', '\\', '\0'];
        let mut raw = String::new();
        // Every string up to 6 characters over the alphabet (6^6 = 46,656 of them).
        for n in 0..=6u32 {
            for mut k in 0..alphabet.len().pow(n) {
                raw.clear();
                for _ in 0..n {
                    raw.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                assert_eq!(needs_normalisation(&raw), by_definition(&raw), "{raw:?}");
            }
        }
    }

    #[test]
    fn dirty_paths_are_decoded() {
        for raw in ["/%78", "/./x", "/x/..", "/x/.", "/x\\y", "/x\0", "/..", "."] {
            assert!(needs_normalisation(raw), "{raw:?}");
        }
    }

    #[test]
    fn canonical_is_the_primary_reading() {
        let cases = [
            ("//workspaces//x/", "/workspaces/x"),
            ("/workspaces/%78", "/workspaces/x"),
            ("/a/b/../../c", "/c"),
            ("/a/%2e%2E/c", "/c"),
            ("/a%2Fb", "/a/b"),
            ("/a%20b", "/a b"),
            ("/..", "/"),
            ("", "/"),
            ("/a//../b", "/b"),
        ];
        for (raw, want) in cases {
            assert_eq!(canonical(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn ambiguous_paths_get_every_plausible_reading_primary_first() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases: [(&str, Vec<Vec<String>>); 6] = [
            ("/w/a%2Fb", vec![s(&["w", "a", "b"]), s(&["w", "a/b"])]),
            ("/o//p", vec![s(&["o", "p"]), s(&["o", "", "p"])]),
            ("/w/a\\b", vec![s(&["w", "a\\b"]), s(&["w", "a", "b"])]),
            ("/w/a%00/b", vec![s(&["w", "a\0", "b"]), s(&["w", "a"])]),
            ("/w/x/..", vec![s(&["w"]), s(&["w", "x", ".."])]),
            (
                "/a//../b",
                vec![
                    s(&["b"]),
                    s(&["a", "b"]),
                    s(&["a", "..", "b"]),
                    s(&["a", "", "..", "b"]),
                ],
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(readings(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn plain_paths_have_one_reading() {
        for (raw, want) in [
            ("/", "/"),
            ("/workspaces/w1", "/workspaces/w1"),
            ("/workspaces/%77%31", "/workspaces/w1"),
            ("/a/b.c/..d/.e", "/a/b.c/..d/.e"),
            ("/a/%C3%A9", "/a/\u{e9}"),
        ] {
            assert_eq!(plain(raw).unwrap(), want, "{raw:?}");
        }
    }

    #[test]
    fn ambiguous_paths_are_not_plain() {
        for raw in [
            "",
            "*",
            "//workspaces/w1",
            "/workspaces//w1",
            "/workspaces/w1/",
            "/workspaces/w2/files/x/../../../w1",
            "/workspaces/./w1",
            "/workspaces/%2e%2E/w1",
            "/workspaces/%2e",
            "/workspaces/a%2Fb",
            "/workspaces/a%2fb",
            "/workspaces/a\\b",
            "/workspaces/a%5Cb",
            "/workspaces/a%00",
            "/workspaces/%zz",
            "/workspaces/%4",
            "/workspaces/X%FF",
            "/workspaces/X%FE",
            "/workspaces/%C0",
        ] {
            assert!(plain(raw).is_err(), "{raw:?} should not be plain");
        }
    }

    #[test]
    fn reading_count_is_bounded() {
        let worst = "/a%2F%5C%00/./..//b\\c";
        let n = readings(worst).len();
        assert!((2..=24).contains(&n), "{n}");
    }
}

//! Containment of request-supplied paths in their root directory.
//!
//! Every path built from a request goes through here: lexical normalisation (so `a/../..`
//! cannot climb out), then, for files that exist, a canonical check so a symlink cannot
//! lead outside the root either.

use std::path::{Component, Path, PathBuf};

/// Joins `rel` onto `base` and normalises `.`/`..` lexically (Python's `abspath(join(..))`).
/// An absolute `rel` replaces `base`, as `os.path.join` does.
pub fn normalize_join(base: &Path, rel: &str) -> PathBuf {
    let joined = base.join(rel);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Whether `path` is `root` or lies below it (lexically; both should be normalised).
pub fn is_within(root: &Path, path: &Path) -> bool {
    path.starts_with(root)
}

/// Lexically normalised absolute form of a directory (relative paths are taken from the cwd).
pub fn absolute(dir: &Path) -> PathBuf {
    let base = if dir.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir().unwrap_or_default()
    };
    normalize_join(&base, &dir.to_string_lossy())
}

/// For a path that exists: true if, after resolving symlinks, it is still inside `root`.
/// Paths that do not exist yet are judged by their nearest existing ancestor.
pub fn real_within(root: &Path, path: &Path) -> bool {
    let Ok(real_root) = root.canonicalize() else {
        return false;
    };
    let mut probe = path.to_path_buf();
    loop {
        if let Ok(real) = probe.canonicalize() {
            return real.starts_with(&real_root);
        }
        if !probe.pop() {
            return false;
        }
    }
}

/// A name or subfolder from a request that must not climb out: no NUL, no leading `/`,
/// no `..` component.
pub fn has_traversal(s: &str) -> bool {
    s.contains('\0')
        || s.starts_with('/')
        || s.starts_with('\\')
        || Path::new(s).components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_contains() {
        let root = Path::new("/srv/out");
        assert_eq!(
            normalize_join(root, "a/./b/../c.png"),
            PathBuf::from("/srv/out/a/c.png")
        );
        assert!(!is_within(root, &normalize_join(root, "../x")));
        assert!(!is_within(root, &normalize_join(root, "/etc")));
        assert!(!is_within(root, &normalize_join(root, "a/../../out2")));
        assert!(is_within(root, &normalize_join(root, "sub")));
    }

    #[test]
    fn traversal_detection() {
        assert!(has_traversal("../a"));
        assert!(has_traversal("/etc/passwd"));
        assert!(has_traversal("a/../../b"));
        assert!(has_traversal("a\0b"));
        assert!(!has_traversal("a/b.png"));
        assert!(!has_traversal("a..b.png"));
    }

    #[test]
    fn symlink_leaving_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        std::fs::write(root.path().join("ok.txt"), b"x").unwrap();
        assert!(real_within(root.path(), &root.path().join("ok.txt")));
        assert!(!real_within(
            root.path(),
            &root.path().join("link/secret.txt")
        ));
        assert!(real_within(
            root.path(),
            &root.path().join("new/dir/file.png")
        ));
    }
}

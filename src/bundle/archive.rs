//! Reading and writing the gzipped tarball that carries a bundle, defensively.
//!
//! A bundle comes from a server, so its archive is hostile until proven otherwise. Reading
//! never touches the file system: entries are read into memory, under caps on the number of
//! files, each file's size and the total decompressed size (a decompression bomb stops at the
//! cap, not when memory runs out). Only regular files and directories are accepted; links,
//! devices, FIFOs and sparse files are refused, and so are paths with `..`, empty or `.`
//! components in the middle, backslashes, NUL bytes, and names that appear twice. A single
//! leading `/` is the bundle root, as `opa build` writes it, and a leading `./` (as
//! `tar -C dir .` writes it) is dropped.

use super::{BundleError, BundleLimits};
use flate2::read::GzDecoder;
use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;

/// One regular file of a bundle: its path inside the bundle (no leading `/`) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEntry {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Reads every regular file of the gzipped tarball `gzipped`, in archive order.
pub fn read_entries(
    gzipped: &[u8],
    limits: &BundleLimits,
) -> Result<Vec<BundleEntry>, BundleError> {
    if !gzipped.starts_with(&[0x1f, 0x8b]) {
        return Err(BundleError::NotGzip);
    }
    // One byte over the cap tells "exactly at the cap" from "over it".
    let decompressed = GzDecoder::new(gzipped).take(limits.max_total_bytes.saturating_add(1));
    let read = Rc::new(Cell::new(0));
    let mut archive = tar::Archive::new(Counting {
        inner: decompressed,
        read: read.clone(),
    });
    // Reading stops at the cap, which the tar reader sees as a truncated archive.
    let failed = |e: std::io::Error| match read.get() > limits.max_total_bytes {
        true => BundleError::TooLarge {
            limit: limits.max_total_bytes,
        },
        false => BundleError::Archive {
            message: e.to_string(),
        },
    };
    let mut entries: Vec<BundleEntry> = Vec::new();
    let iter = archive.entries().map_err(failed)?;
    for entry in iter {
        let mut entry = entry.map_err(failed)?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue; // `git archive` writes one; it names no file
        }
        let name = normalise(&raw_path).ok_or(BundleError::UnsafePath {
            path: shown.clone(),
        })?;
        if kind.is_dir() {
            continue;
        }
        if name.is_empty() {
            return Err(BundleError::UnsafePath { path: shown });
        }
        if !kind.is_file() {
            return Err(BundleError::UnsupportedEntry {
                path: shown,
                kind: entry_kind(kind),
            });
        }
        if entries.len() >= limits.max_files {
            return Err(BundleError::TooManyFiles {
                limit: limits.max_files,
            });
        }
        if entries.iter().any(|e| e.name == name) {
            return Err(BundleError::DuplicateEntry { path: name });
        }
        let declared = entry.size();
        if declared > limits.max_file_bytes {
            return Err(BundleError::FileTooLarge {
                path: name,
                limit: limits.max_file_bytes,
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
        entry
            .by_ref()
            .take(limits.max_file_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(failed)?;
        if bytes.len() as u64 > limits.max_file_bytes {
            return Err(BundleError::FileTooLarge {
                path: name,
                limit: limits.max_file_bytes,
            });
        }
        entries.push(BundleEntry { name, bytes });
    }
    // The archive may end early inside the cap: read what the decoder still holds so a bomb
    // hidden after the end-of-archive marker is also caught, and a truncated stream reported.
    let mut inner = archive.into_inner();
    std::io::copy(&mut inner, &mut std::io::sink()).map_err(failed)?;
    if read.get() > limits.max_total_bytes {
        return Err(BundleError::TooLarge {
            limit: limits.max_total_bytes,
        });
    }
    Ok(entries)
}

/// Writes `entries` as a gzipped tarball, byte for byte the same for the same input: entries
/// in the order given, mode 0644, owner 0:0, no user or group names, mtime 0.
pub fn write_entries(entries: &[BundleEntry]) -> std::io::Result<Vec<u8>> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    let mut builder = tar::Builder::new(gz);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(entry.bytes.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder.append_data(&mut header, &entry.name, entry.bytes.as_slice())?;
    }
    let mut gz = builder.into_inner()?;
    gz.flush()?;
    gz.finish()
}

/// Counts the decompressed bytes read so far.
struct Counting<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// The entry's path relative to the bundle root, or `None` when it could escape it.
fn normalise(raw: &[u8]) -> Option<String> {
    let path = std::str::from_utf8(raw).ok()?;
    if path.contains('\\') || path.contains('\0') {
        return None;
    }
    let path = path.strip_prefix("./").unwrap_or(path);
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path); // directories
    if path.is_empty() {
        return Some(String::new()); // the root directory entry itself
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    Some(path.to_string())
}

fn entry_kind(kind: tar::EntryType) -> &'static str {
    if kind.is_symlink() {
        "symbolic link"
    } else if kind.is_hard_link() {
        "hard link"
    } else if kind.is_character_special() || kind.is_block_special() {
        "device"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_gnu_sparse() {
        "sparse file"
    } else {
        "special entry"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BundleLimits {
        BundleLimits {
            max_files: 4,
            max_file_bytes: 1024,
            max_total_bytes: 16 * 1024,
        }
    }

    /// A tarball with raw headers, so hostile entries can be written as they would arrive.
    fn raw_tarball(entries: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut tar = Vec::new();
        for (path, kind, data) in entries {
            let mut header = tar::Header::new_old();
            header.as_mut_bytes()[..path.len()].copy_from_slice(path);
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if kind.is_symlink() || kind.is_hard_link() {
                header.set_link_name_literal("/etc/passwd").unwrap();
            }
            header.set_cksum();
            tar.extend_from_slice(header.as_bytes());
            tar.extend_from_slice(data);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
        tar.resize(tar.len() + 1024, 0);
        gzip(&tar)
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn entry(name: &str, bytes: &[u8]) -> BundleEntry {
        BundleEntry {
            name: name.into(),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn written_entries_read_back_and_the_bytes_are_deterministic() {
        let long = format!("{}/policy.rego", "deep".repeat(40));
        let entries = vec![entry(".manifest", b"{}"), entry(&long, b"package x\n")];
        let first = write_entries(&entries).unwrap();
        assert_eq!(first, write_entries(&entries).unwrap());
        assert_eq!(read_entries(&first, &limits()).unwrap(), entries);
    }

    #[test]
    fn leading_slash_and_dot_slash_name_the_bundle_root() {
        let t = raw_tarball(&[
            (b"./", tar::EntryType::Directory, b""),
            (b"./a/data.json", tar::EntryType::Regular, b"{}"),
            (b"/b/data.json", tar::EntryType::Regular, b"{}"),
        ]);
        let names: Vec<String> = read_entries(&t, &limits())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["a/data.json", "b/data.json"]);
    }

    #[test]
    fn traversal_and_odd_paths_are_refused() {
        for path in [
            &b"../x.rego"[..],
            b"a/../../x.rego",
            b"/../x.rego",
            b"//etc/x.rego",
            b"a//b.rego",
            b"a/./b.rego",
            b"a\\..\\b.rego",
            b"\xff.rego",
        ] {
            let t = raw_tarball(&[(path, tar::EntryType::Regular, b"x")]);
            let err = read_entries(&t, &limits()).unwrap_err();
            assert!(
                matches!(err, BundleError::UnsafePath { .. }),
                "{}: {err}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn links_devices_and_fifos_are_refused() {
        for (kind, what) in [
            (tar::EntryType::Symlink, "symbolic link"),
            (tar::EntryType::Link, "hard link"),
            (tar::EntryType::Char, "device"),
            (tar::EntryType::Block, "device"),
            (tar::EntryType::Fifo, "FIFO"),
        ] {
            let t = raw_tarball(&[(b"a/data.json", kind, b"")]);
            match read_entries(&t, &limits()).unwrap_err() {
                BundleError::UnsupportedEntry { path, kind } => {
                    assert_eq!((path.as_str(), kind), ("a/data.json", what));
                }
                other => panic!("{other}"),
            }
        }
    }

    #[test]
    fn a_name_seen_twice_is_refused_whatever_its_spelling() {
        let t = raw_tarball(&[
            (b"/a/data.json", tar::EntryType::Regular, b"{}"),
            (b"./a/data.json", tar::EntryType::Regular, b"{}"),
        ]);
        match read_entries(&t, &limits()).unwrap_err() {
            BundleError::DuplicateEntry { path } => assert_eq!(path, "a/data.json"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn too_many_files_one_large_file_or_a_bomb_are_refused() {
        let five: Vec<BundleEntry> = (0..5).map(|i| entry(&format!("{i}.rego"), b"x")).collect();
        assert!(matches!(
            read_entries(&write_entries(&five).unwrap(), &limits()).unwrap_err(),
            BundleError::TooManyFiles { limit: 4 }
        ));

        let big = write_entries(&[entry("big.rego", &[b'x'; 1025])]).unwrap();
        assert!(matches!(
            read_entries(&big, &limits()).unwrap_err(),
            BundleError::FileTooLarge { limit: 1024, .. }
        ));

        // Each file under its cap, the sum over the total: 20 KiB of zeros gzips to ~100 bytes.
        let sum: Vec<BundleEntry> = (0..4)
            .map(|i| entry(&format!("{i}.rego"), &[0u8; 1000]))
            .collect();
        let tight = BundleLimits {
            max_total_bytes: 3000,
            ..limits()
        };
        assert!(matches!(
            read_entries(&write_entries(&sum).unwrap(), &tight).unwrap_err(),
            BundleError::TooLarge { limit: 3000 }
        ));

        // Zeros after the end-of-archive marker count too.
        let bomb = gzip(&vec![0; 64 * 1024 * 1024]);
        assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
        assert!(matches!(
            read_entries(&bomb, &limits()).unwrap_err(),
            BundleError::TooLarge { .. }
        ));
    }

    #[test]
    fn not_gzip_and_truncated_archives_are_refused() {
        assert!(matches!(
            read_entries(b"PK\x03\x04", &limits()).unwrap_err(),
            BundleError::NotGzip
        ));
        let good = write_entries(&[entry("a.rego", &[b'x'; 900])]).unwrap();
        let cut = &good[..good.len() / 2];
        assert!(matches!(
            read_entries(cut, &limits()).unwrap_err(),
            BundleError::Archive { .. }
        ));
    }
}

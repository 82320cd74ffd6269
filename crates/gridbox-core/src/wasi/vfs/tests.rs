//! Tests of the in-memory filesystem alone.

use super::*;

const T0: u64 = 1_767_225_600_000_000_000;

fn bytes(b: &[u8]) -> Arc<[u8]> {
    Arc::from(b)
}

fn inputs() -> Vec<(String, Arc<[u8]>)> {
    // Deliberately unsorted: the result must not depend on the order given.
    vec![
        ("zeta.txt".into(), bytes(b"zeta zeta")),
        ("sub/deeper/c.bin".into(), bytes(&[0, 1, 2, 255])),
        ("a.txt".into(), bytes(b"alpha")),
        ("sub/b.txt".into(), bytes(b"bravo")),
    ]
}

/// A filesystem with `/input` (mount 0) and `/output` (mount 1).
fn fs(output_bytes: u64, output_files: u64) -> (Vfs, NodeId, NodeId) {
    let mut vfs = Vfs::new(T0, output_bytes, output_files);
    let input = vfs.add_read_only_mount("/input", inputs()).unwrap();
    let output = vfs.add_writable_mount("/output").unwrap();
    let (i, o) = (vfs.mount_root(input).unwrap(), vfs.mount_root(output).unwrap());
    (vfs, i, o)
}

fn names(vfs: &Vfs, dir: NodeId) -> Vec<String> {
    vfs.read_dir(dir, 0).unwrap().map(|e| e.name.to_string()).collect()
}

fn write_file(vfs: &mut Vfs, dir: NodeId, path: &str, data: &[u8]) -> Result<NodeId, FsError> {
    let node = vfs.open(dir, path, OpenOptions { create: true, truncate: true, write: true, ..Default::default() }, T0 + 5)?;
    vfs.write_at(node, 0, data, T0 + 5)?;
    vfs.release(node);
    Ok(node)
}

#[test]
fn errno_numbers_match_the_witx() {
    // Positions in the witx `errno` enum.
    let expected = [
        (Errno::Success, 0),
        (Errno::TooBig, 1),
        (Errno::Acces, 2),
        (Errno::Badf, 8),
        (Errno::Busy, 10),
        (Errno::Exist, 20),
        (Errno::Fault, 21),
        (Errno::Fbig, 22),
        (Errno::Ilseq, 25),
        (Errno::Inval, 28),
        (Errno::Io, 29),
        (Errno::Isdir, 31),
        (Errno::Mfile, 33),
        (Errno::Nametoolong, 37),
        (Errno::Noent, 44),
        (Errno::Nomem, 48),
        (Errno::Nospc, 51),
        (Errno::Notdir, 54),
        (Errno::Notempty, 55),
        (Errno::Notsup, 58),
        (Errno::Overflow, 61),
        (Errno::Perm, 63),
        (Errno::Rofs, 69),
        (Errno::Spipe, 70),
        (Errno::Xdev, 75),
        (Errno::Notcapable, 76),
    ];
    for (errno, number) in expected {
        assert_eq!(errno.raw(), number, "{errno:?}");
    }
}

#[test]
fn inputs_are_mounted_with_deterministic_metadata() {
    let (vfs, input, output) = fs(1 << 20, 100);
    assert_eq!(names(&vfs, input), [".", "..", "a.txt", "sub", "zeta.txt"]);
    let sub = vfs.lookup(input, "sub").unwrap();
    assert_eq!(names(&vfs, sub), [".", "..", "b.txt", "deeper"]);
    // Inodes in sorted-path order: root 1, a.txt 2, sub 3, sub/b.txt 4, sub/deeper 5, c.bin 6,
    // zeta.txt 7, then the output root 8.
    let ino = |path: &str| vfs.stat(vfs.lookup(input, path).unwrap()).unwrap().ino;
    assert_eq!([ino("."), ino("a.txt"), ino("sub"), ino("sub/b.txt"), ino("sub/deeper"), ino("sub/deeper/c.bin"), ino("zeta.txt")], [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(vfs.stat(output).unwrap().ino, 8);
    let stat = vfs.stat(vfs.lookup(input, "sub/deeper/c.bin").unwrap()).unwrap();
    assert_eq!(stat, Stat { dev: 0, ino: 6, kind: FileKind::RegularFile, nlink: 1, size: 4, atim: T0, mtim: T0, ctim: T0 });
    assert_eq!(vfs.stat(output).unwrap().dev, 1);
    // The same set of files in another order gives the same filesystem.
    let mut other = Vfs::new(T0, 1 << 20, 100);
    let mut reversed = inputs();
    reversed.reverse();
    other.add_read_only_mount("/input", reversed).unwrap();
    let root = other.mount_root(0).unwrap();
    assert_eq!(other.stat(other.lookup(root, "sub/deeper/c.bin").unwrap()).unwrap(), stat);
}

#[test]
fn input_bytes_are_shared_not_copied() {
    let shared = bytes(b"big input");
    let mut vfs = Vfs::new(T0, 0, 0);
    vfs.add_read_only_mount("/input", [("x".to_string(), shared.clone())]).unwrap();
    let node = vfs.lookup(vfs.mount_root(0).unwrap(), "x").unwrap();
    assert_eq!(vfs.file_bytes(node).unwrap().as_ptr(), shared.as_ptr());
}

#[test]
fn bad_mounts_are_typed_errors() {
    let mut vfs = Vfs::new(T0, 0, 0);
    for path in ["", "a/../b", "/a/./b", "/abs", "a//b", "a/", "x\0y"] {
        let result = vfs.add_read_only_mount("/input", [(path.to_string(), bytes(b""))]);
        assert!(matches!(result, Err(MountError::BadFilePath { .. })), "{path:?}: {result:?}");
    }
    let long = "x".repeat(MAX_NAME_LEN + 1);
    assert!(matches!(vfs.add_read_only_mount("/input", [(long, bytes(b""))]), Err(MountError::BadFilePath { .. })));
    let conflict = vfs.add_read_only_mount("/input", [("a".to_string(), bytes(b"")), ("a/b".to_string(), bytes(b""))]);
    assert_eq!(conflict, Err(MountError::Conflict { path: "a".into() }));
    assert_eq!(vfs.mount_count(), 0, "a refused mount adds nothing");
    for path in ["input", "/in/../x", "/in/", ""] {
        assert!(matches!(vfs.add_writable_mount(path), Err(MountError::BadMountPath { .. })), "{path:?}");
    }
    vfs.add_writable_mount("/output").unwrap();
    assert!(matches!(vfs.add_writable_mount("/output"), Err(MountError::DuplicateMount { .. })));
    assert!(vfs.add_read_only_mount("/input", []).is_ok());
    assert_eq!(vfs.mount_path(1), Some("/input"));
}

#[test]
fn path_resolution_stays_inside_the_mount() {
    let (vfs, input, _) = fs(1 << 20, 100);
    let sub = vfs.lookup(input, "sub").unwrap();
    assert_eq!(vfs.lookup(input, "sub/./deeper/../b.txt"), vfs.lookup(input, "sub/b.txt"));
    assert_eq!(vfs.lookup(input, "sub//b.txt"), vfs.lookup(input, "sub/b.txt"));
    assert_eq!(vfs.lookup(input, "."), Ok(input));
    assert_eq!(vfs.lookup(sub, ".."), Ok(input), "`..` below the mount root is fine");
    assert_eq!(vfs.lookup(sub, "../a.txt"), vfs.lookup(input, "a.txt"));
    for escape in ["..", "../etc/passwd", "sub/../../x", "sub/deeper/../../../input"] {
        assert_eq!(vfs.lookup(input, escape), Err(Errno::Perm), "{escape}");
    }
    assert_eq!(vfs.lookup(sub, "../../x"), Err(Errno::Perm));
    assert_eq!(vfs.lookup(input, "/etc/passwd"), Err(Errno::Perm));
    assert_eq!(vfs.lookup(input, ""), Err(Errno::Noent));
    assert_eq!(vfs.lookup(input, "missing"), Err(Errno::Noent));
    assert_eq!(vfs.lookup(input, "a.txt/"), Err(Errno::Notdir));
    assert_eq!(vfs.lookup(input, "a.txt/x"), Err(Errno::Notdir));
    assert_eq!(vfs.lookup(input, "a.txt/.."), Err(Errno::Notdir));
    assert!(vfs.lookup(input, "sub/").is_ok());
    assert_eq!(vfs.lookup(input, &"x".repeat(MAX_NAME_LEN + 1)), Err(Errno::Nametoolong));
    assert_eq!(vfs.lookup(input, &"a/".repeat(MAX_PATH_LEN)), Err(Errno::Nametoolong));
    let file = vfs.lookup(input, "a.txt").unwrap();
    assert_eq!(vfs.lookup(file, "x"), Err(Errno::Notdir), "a file is no base directory");
}

#[test]
fn read_only_mounts_refuse_every_change() {
    let (mut vfs, input, output) = fs(1 << 20, 100);
    let write = OpenOptions { write: true, ..Default::default() };
    let create = OpenOptions { create: true, write: true, ..Default::default() };
    assert_eq!(vfs.open(input, "a.txt", write, T0), Err(Errno::Rofs.into()));
    assert_eq!(vfs.open(input, "a.txt", OpenOptions { truncate: true, ..Default::default() }, T0), Err(Errno::Rofs.into()));
    assert_eq!(vfs.open(input, "new.txt", create, T0), Err(Errno::Rofs.into()));
    assert_eq!(vfs.create_dir(input, "d", T0), Err(Errno::Rofs.into()));
    assert_eq!(vfs.unlink_file(input, "a.txt", T0), Err(Errno::Rofs));
    assert_eq!(vfs.remove_dir(input, "sub/deeper", T0), Err(Errno::Notempty));
    assert_eq!(vfs.rename(input, "a.txt", input, "b.txt", T0), Err(Errno::Rofs));
    assert_eq!(vfs.rename(input, "a.txt", output, "a.txt", T0), Err(Errno::Xdev));
    let file = vfs.open(input, "a.txt", OpenOptions::default(), T0).unwrap();
    assert_eq!(vfs.write_at(file, 0, b"x", T0), Err(Errno::Rofs.into()));
    assert_eq!(vfs.set_size(file, 0, T0), Err(Errno::Rofs.into()));
    assert_eq!(vfs.set_times(file, Some(1), None, T0), Err(Errno::Rofs));
    let mut buf = [0u8; 16];
    let n = vfs.read_at(file, 1, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"lpha");
    assert_eq!(vfs.read_at(file, u64::MAX, &mut buf), Ok(0));
    assert_eq!(names(&vfs, input), [".", "..", "a.txt", "sub", "zeta.txt"]);
    assert_eq!(vfs.output_files_created(), 0);
}

#[test]
fn files_are_created_written_renamed_and_removed() {
    let (mut vfs, _, output) = fs(1 << 20, 100);
    vfs.create_dir(output, "a", T0 + 1).unwrap();
    vfs.create_dir(output, "a/b", T0 + 2).unwrap();
    assert_eq!(vfs.create_dir(output, "a/b", T0), Err(Errno::Exist.into()));
    assert_eq!(vfs.create_dir(output, ".", T0), Err(Errno::Exist.into()));
    assert_eq!(vfs.create_dir(output, "x/y", T0), Err(Errno::Noent.into()));
    let one = write_file(&mut vfs, output, "a/b/one.txt", b"one").unwrap();
    let stat = vfs.stat(one).unwrap();
    assert_eq!((stat.size, stat.mtim, stat.ctim, stat.dev), (3, T0 + 5, T0 + 5, 1));
    let file = vfs.open(output, "a/b/one.txt", OpenOptions { write: true, ..Default::default() }, T0).unwrap();
    vfs.write_at(file, 3, b"+two", T0 + 9).unwrap();
    vfs.release(file);
    assert_eq!(vfs.stat(one).unwrap().mtim, T0 + 9);
    let exclusive = OpenOptions { create: true, exclusive: true, write: true, ..Default::default() };
    assert_eq!(vfs.open(output, "a/b/one.txt", exclusive, T0), Err(Errno::Exist.into()));
    assert_eq!(vfs.open(output, "a/b/one.txt", OpenOptions { directory: true, ..Default::default() }, T0), Err(Errno::Notdir.into()));
    assert_eq!(vfs.open(output, "new/", OpenOptions { create: true, ..Default::default() }, T0), Err(Errno::Isdir.into()));
    vfs.rename(output, "a/b/one.txt", output, "a/moved.txt", T0).unwrap();
    assert_eq!(vfs.remove_dir(output, "a/b/one.txt", T0), Err(Errno::Noent));
    write_file(&mut vfs, output, "gone.txt", b"x").unwrap();
    assert_eq!(vfs.remove_dir(output, "gone.txt", T0), Err(Errno::Notdir));
    vfs.unlink_file(output, "gone.txt", T0).unwrap();
    assert_eq!(vfs.unlink_file(output, "a", T0), Err(Errno::Isdir));
    assert_eq!(vfs.remove_dir(output, "a", T0), Err(Errno::Notempty));
    vfs.remove_dir(output, "a/b", T0).unwrap();
    assert_eq!(vfs.remove_dir(output, ".", T0), Err(Errno::Inval));
    let outputs = vfs.collect_outputs();
    assert_eq!(outputs.keys().collect::<Vec<_>>(), ["a/moved.txt"]);
    assert_eq!(outputs["a/moved.txt"], b"one+two");
    assert_eq!(vfs.output_bytes_used(), 7);
    // a, a/b, one.txt and gone.txt were created; deleting gives nothing back.
    assert_eq!(vfs.output_files_created(), 4);
    // Truncation on open and set_size.
    let node = vfs.open(output, "a/moved.txt", OpenOptions { truncate: true, write: true, ..Default::default() }, T0).unwrap();
    assert_eq!(vfs.size(node), Ok(0));
    vfs.set_size(node, 3, T0).unwrap();
    assert_eq!(vfs.file_bytes(node).unwrap(), [0, 0, 0]);
    assert_eq!(vfs.output_bytes_used(), 3);
    vfs.write_at(node, 5, b"z", T0).unwrap();
    assert_eq!(vfs.file_bytes(node).unwrap(), [0, 0, 0, 0, 0, b'z']);
    vfs.release(node);
}

#[test]
fn renames_follow_posix() {
    let (mut vfs, _, output) = fs(1 << 20, 100);
    vfs.create_dir(output, "d", T0).unwrap();
    vfs.create_dir(output, "d/e", T0).unwrap();
    vfs.create_dir(output, "empty", T0).unwrap();
    write_file(&mut vfs, output, "f", b"f").unwrap();
    write_file(&mut vfs, output, "g", b"gg").unwrap();
    assert_eq!(vfs.rename(output, "d", output, "d/e/x", T0), Err(Errno::Inval));
    assert_eq!(vfs.rename(output, "d", output, "d/x", T0), Err(Errno::Inval));
    assert_eq!(vfs.rename(output, "d", output, "f", T0), Err(Errno::Notdir));
    assert_eq!(vfs.rename(output, "f", output, "d", T0), Err(Errno::Isdir));
    assert_eq!(vfs.rename(output, "empty", output, "d", T0), Err(Errno::Notempty));
    assert_eq!(vfs.rename(output, "f/", output, "h", T0), Err(Errno::Notdir));
    assert_eq!(vfs.rename(output, "missing", output, "h", T0), Err(Errno::Noent));
    assert_eq!(vfs.rename(output, ".", output, "h", T0), Err(Errno::Inval));
    vfs.rename(output, "f", output, "f", T0).unwrap();
    vfs.rename(output, "d", output, "empty", T0).unwrap();
    assert!(vfs.lookup(output, "empty/e").is_ok());
    // A file replaces a file, and the replaced bytes leave the quota.
    assert_eq!(vfs.output_bytes_used(), 3);
    vfs.rename(output, "g", output, "f", T0).unwrap();
    assert_eq!(vfs.output_bytes_used(), 2);
    assert_eq!(names(&vfs, output), [".", "..", "empty", "f"]);
    let e = vfs.lookup(output, "empty/e").unwrap();
    assert_eq!(vfs.lookup(e, "../.."), Ok(output), "parents follow the move");
}

/// Where several errors apply, the one Linux (so wasmtime-wasi) returns; and `O_CREAT` on a
/// directory. Found by tests/wasi_differential.rs.
#[test]
fn errors_come_in_linux_order() {
    let (mut vfs, _, output) = fs(1 << 20, 100);
    vfs.create_dir(output, "d", T0).unwrap();
    write_file(&mut vfs, output, "d/f", b"f").unwrap();
    write_file(&mut vfs, output, "g", b"g").unwrap();
    let long = "n".repeat(MAX_NAME_LEN + 1);
    let create = OpenOptions { create: true, write: true, ..Default::default() };
    // O_CREAT on a directory is EISDIR (O_EXCL first: EEXIST), and so is `name/`, existing or not.
    for path in ["d", ".", "d/", "g/", "new/"] {
        assert_eq!(vfs.open(output, path, create, T0), Err(Errno::Isdir.into()), "{path}");
    }
    assert_eq!(vfs.open(output, ".", OpenOptions { exclusive: true, ..create }, T0), Err(Errno::Exist.into()));
    assert!(vfs.open(output, "d", OpenOptions { create: true, directory: true, ..Default::default() }, T0).is_ok());
    // A name longer than NAME_MAX is refused when it is reached: a missing directory first.
    assert_eq!(vfs.lookup(output, &format!("missing/{long}")), Err(Errno::Noent));
    assert_eq!(vfs.lookup(output, &format!("{long}/missing")), Err(Errno::Nametoolong));
    assert_eq!(vfs.create_dir(output, &long, T0), Err(Errno::Nametoolong.into()));
    // The directory of a path is resolved before its last name: `file/name` is ENOTDIR.
    assert_eq!(vfs.rename(output, "missing", output, "g/x", T0), Err(Errno::Notdir));
    assert_eq!(vfs.unlink_file(output, "g/missing", T0), Err(Errno::Notdir));
    // rename: old's directory, new's directory, dots, then the names, then their kinds.
    assert_eq!(vfs.rename(output, "missing/x", output, "/abs", T0), Err(Errno::Noent));
    assert_eq!(vfs.rename(output, "missing", output, &long, T0), Err(Errno::Noent));
    assert_eq!(vfs.rename(output, &long, output, "missing/x", T0), Err(Errno::Noent));
    assert_eq!(vfs.rename(output, "g", output, "..", T0), Err(Errno::Perm));
    assert_eq!(vfs.rename(output, "missing", output, ".", T0), Err(Errno::Inval));
    // A directory moved below itself is EINVAL whatever is there; a name above the source,
    // ENOTEMPTY whatever the source is.
    assert_eq!(vfs.rename(output, "d", output, "d/f", T0), Err(Errno::Inval));
    assert_eq!(vfs.rename(output, "d/f", output, "d", T0), Err(Errno::Notempty));
    // A removed directory has no names: ENOENT before the trailing slash's ENOTDIR.
    vfs.create_dir(output, "gone", T0).unwrap();
    let gone = vfs.open(output, "gone", OpenOptions::default(), T0).unwrap();
    vfs.remove_dir(output, "gone", T0).unwrap();
    assert_eq!(vfs.rename(output, "g", gone, "x/", T0), Err(Errno::Noent));
    vfs.release(gone);
}

#[test]
fn unlinked_open_files_live_until_closed() {
    let (mut vfs, _, output) = fs(100, 100);
    let node = write_file(&mut vfs, output, "tmp", b"data").unwrap();
    vfs.retain(node).unwrap();
    vfs.unlink_file(output, "tmp", T0).unwrap();
    assert_eq!(vfs.stat(node).unwrap().nlink, 0);
    assert_eq!(vfs.file_bytes(node).unwrap(), b"data");
    assert_eq!(vfs.output_bytes_used(), 4, "still held");
    vfs.release(node);
    assert_eq!(vfs.stat(node), Err(Errno::Badf));
    assert_eq!(vfs.output_bytes_used(), 0);
    // A removed directory that is still open accepts no new entries.
    vfs.create_dir(output, "d", T0).unwrap();
    let dir = vfs.open(output, "d", OpenOptions::default(), T0).unwrap();
    vfs.remove_dir(output, "d", T0).unwrap();
    assert_eq!(vfs.create_dir(dir, "x", T0), Err(Errno::Noent.into()));
    assert_eq!(vfs.lookup(dir, ".."), Err(Errno::Noent));
    vfs.release(dir);
}

#[test]
fn output_quotas_stop_the_job_before_allocating() {
    let (mut vfs, _, output) = fs(10, 3);
    let bytes_limit = FsError::Limit(LimitExceeded { limit: LimitKind::OutputBytes, value: 10 });
    let files_limit = FsError::Limit(LimitExceeded { limit: LimitKind::OutputFiles, value: 3 });
    let node = write_file(&mut vfs, output, "a", b"0123456789").unwrap();
    let file = vfs.open(output, "a", OpenOptions { write: true, ..Default::default() }, T0).unwrap();
    assert_eq!(vfs.write_at(file, 10, b"x", T0), Err(bytes_limit));
    assert_eq!(vfs.write_at(file, 1 << 40, b"x", T0), Err(bytes_limit));
    assert_eq!(vfs.set_size(file, 1 << 40, T0), Err(bytes_limit));
    assert_eq!(vfs.write_at(file, u64::MAX - 1, b"xyz", T0), Err(Errno::Fbig.into()));
    assert_eq!(vfs.write_at(file, u64::MAX, b"", T0), Ok(()), "an empty write changes nothing");
    assert_eq!(vfs.size(node), Ok(10));
    vfs.write_at(file, 0, b"ABCDEFGHIJ", T0).unwrap(); // overwriting within the size is fine
    assert_eq!(vfs.file_bytes(file).unwrap(), b"ABCDEFGHIJ");
    vfs.set_size(file, 4, T0).unwrap();
    vfs.release(file);
    assert_eq!(vfs.output_bytes_used(), 4);
    let b = write_file(&mut vfs, output, "b", b"012345").unwrap();
    assert_eq!(vfs.output_bytes_used(), 10);
    assert_eq!(vfs.write_at(b, 6, b"!", T0), Err(bytes_limit));
    vfs.unlink_file(output, "b", T0).unwrap();
    assert_eq!(vfs.output_bytes_used(), 4, "deleting gives bytes back");
    vfs.create_dir(output, "d", T0).unwrap();
    // Three creations so far (a, b, d): the fourth stops the job, whatever was deleted.
    assert_eq!(write_file(&mut vfs, output, "c", b""), Err(files_limit));
    assert_eq!(vfs.create_dir(output, "e", T0), Err(files_limit));
    assert_eq!(names(&vfs, output), [".", "..", "a", "d"]);
    // Reading past the quota is no write: still fine.
    assert!(vfs.lookup(output, "a").is_ok());
}

#[test]
fn readdir_cookies_resume_where_they_stopped() {
    let (vfs, input, _) = fs(10, 3);
    let all: Vec<(u64, String)> = vfs.read_dir(input, 0).unwrap().map(|e| (e.next, e.name.to_string())).collect();
    assert_eq!(all, [(1, "."), (2, ".."), (3, "a.txt"), (4, "sub"), (5, "zeta.txt")].map(|(n, s)| (n, s.to_string())));
    let rest: Vec<&str> = vfs.read_dir(input, 3).unwrap().map(|e| e.name).collect();
    assert_eq!(rest, ["sub", "zeta.txt"]);
    assert_eq!(vfs.read_dir(input, u64::MAX).unwrap().count(), 0);
    let file = vfs.lookup(input, "a.txt").unwrap();
    assert!(matches!(vfs.read_dir(file, 0), Err(Errno::Notdir)));
    let dots: Vec<u64> = vfs.read_dir(input, 0).unwrap().take(2).map(|e| e.ino).collect();
    assert_eq!(dots, [1, 1], "the mount root is its own parent");
    let sub = vfs.lookup(input, "sub").unwrap();
    let kinds: Vec<FileKind> = vfs.read_dir(sub, 0).unwrap().map(|e| e.kind).collect();
    assert_eq!(kinds, [FileKind::Directory, FileKind::Directory, FileKind::RegularFile, FileKind::Directory]);
}

#[test]
fn set_times_stamps_ctim_with_now() {
    let (mut vfs, _, output) = fs(10, 3);
    let node = write_file(&mut vfs, output, "a", b"x").unwrap();
    vfs.set_times(node, Some(7), None, T0 + 100).unwrap();
    let stat = vfs.stat(node).unwrap();
    assert_eq!((stat.atim, stat.mtim, stat.ctim), (7, T0 + 5, T0 + 100));
}

/// Every path a job makes under a writable mount stays within MAX_OUTPUT_PATH bytes, so any
/// output tree can be written on the host; a deeper one is ENAMETOOLONG when it is made, by
/// creation or by a rename that would carry a tree too deep.
#[test]
fn output_paths_stay_within_their_bound_whatever_the_moves() {
    let (mut vfs, _, out) = fs(1 << 20, 10_000);
    let name = "d".repeat(200);
    // 5 levels of 200 bytes: 5 * 200 + 4 separators = 1004 bytes.
    let mut path = name.clone();
    for _ in 0..4 {
        vfs.create_dir(out, &path, T0).unwrap();
        path = format!("{path}/{name}");
    }
    vfs.create_dir(out, &path, T0).unwrap();
    // A file of 19 bytes below: 1004 + 1 + 19 = 1024, the bound; one more byte is too long.
    write_file(&mut vfs, out, &format!("{path}/{}", "f".repeat(19)), b"x").unwrap();
    assert_eq!(write_file(&mut vfs, out, &format!("{path}/{}", "f".repeat(20)), b"x").err(), Some(FsError::Errno(Errno::Nametoolong)));
    assert_eq!(vfs.create_dir(out, &format!("{path}/{}", "g".repeat(20)), T0).err(), Some(FsError::Errno(Errno::Nametoolong)));
    // Moving the deep tree one level down would take it past the bound.
    vfs.create_dir(out, "x", T0).unwrap();
    assert_eq!(vfs.rename(out, &name, out, &format!("x/{name}"), T0), Err(Errno::Nametoolong));
    // A rename to a shorter name is fine, and so is a move that keeps it within the bound.
    vfs.rename(out, &name, out, "s", T0).unwrap();
    vfs.rename(out, "s", out, "x/s", T0).unwrap();
    for (relative, _) in vfs.collect_outputs() {
        assert!(relative.len() <= MAX_OUTPUT_PATH, "{} bytes", relative.len());
    }
}

#[test]
fn a_writable_mount_starts_with_its_files_inside_the_quota_and_copies_them_on_write() {
    let shared = bytes(b"shared bytes");
    let mut vfs = Vfs::new(T0, 100, 10);
    let too_big = vfs.add_mount("/", [("big".to_string(), bytes(&[0; 101]))], true);
    assert!(matches!(too_big, Err(MountError::OverQuota { bytes: 101, limit: 100, .. })), "{too_big:?}");
    assert_eq!(vfs.mount_count(), 0, "a refused mount leaves nothing behind");
    let long = format!("{}/x", ["d"; 600].join("/"));
    assert!(matches!(vfs.add_mount("/", [(long, bytes(b""))], true), Err(MountError::BadFilePath { .. })));

    let mount = vfs.add_mount("/", [("a/file".to_string(), shared.clone()), ("b".to_string(), bytes(b"bb"))], true).unwrap();
    let root = vfs.mount_root(mount).unwrap();
    assert_eq!(vfs.output_bytes_used(), 14);
    assert_eq!(vfs.output_files_created(), 0, "the job made none of them");
    // Nothing is copied until the job writes.
    assert_eq!(Arc::strong_count(&shared), 2);
    let file = vfs.lookup(root, "a/file").unwrap();
    vfs.write_at(file, 0, b"S", T0 + 1).unwrap();
    assert_eq!(Arc::strong_count(&shared), 1, "copied on the first write");
    assert_eq!(vfs.file_bytes(file).unwrap(), b"Shared bytes");
    // Deleting a starting file gives its bytes back; growing past the quota is refused.
    vfs.unlink_file(root, "b", T0 + 2).unwrap();
    assert_eq!(vfs.output_bytes_used(), 12);
    assert!(matches!(vfs.set_size(file, 101, T0 + 3), Err(FsError::Limit(_))));
    // Starting files count towards the output path bound like made ones: a folder 1,003 bytes
    // deep takes a 20-byte name but not a 21-byte one, and cannot be moved under a longer name.
    let deep = ["a", "b", "c", "d"].map(|c| c.repeat(250)).join("/");
    let deep_mount = vfs.add_mount("/deep", [(format!("{deep}/f"), bytes(b""))], true).unwrap();
    let deep_root = vfs.mount_root(deep_mount).unwrap();
    assert_eq!(vfs.create_dir(deep_root, &format!("{deep}/{}", "x".repeat(20)), T0 + 4).map_err(|e| format!("{e:?}")), Ok(()));
    assert!(matches!(vfs.create_dir(deep_root, &format!("{deep}/{}", "y".repeat(21)), T0 + 4), Err(FsError::Errno(Errno::Nametoolong))));
    assert_eq!(vfs.rename(deep_root, &"a".repeat(250), deep_root, &"a".repeat(252), T0 + 5), Err(Errno::Nametoolong));
    assert_eq!(vfs.collect_mount(mount).unwrap().into_iter().collect::<Vec<_>>(), [("a/file".to_string(), b"Shared bytes".to_vec())]);
}

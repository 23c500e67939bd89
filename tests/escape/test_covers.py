"""A contained root job cannot undo, go around or look under the covers of
the daemon's state directory (other clients' output) and its private key."""

from __future__ import annotations

from tests.escape.conftest import Target, run_job


async def test_unmounting_the_state_directory_cover_fails(target: Target) -> None:
    """Layer: mount lock (umount of a locked mount is refused)."""
    state = target.state_dir
    done = await run_job(
        target.daemon, f"umount {state} && echo UNMOUNTED; grep -r . {state} 2>&1; true"
    )
    assert "UNMOUNTED" not in done.stdout, "the mount lock must refuse the umount"
    assert not target.leaked(done.stdout + done.stderr)


async def test_lazily_unmounting_the_key_cover_fails(target: Target) -> None:
    """Layer: mount lock (MNT_DETACH does not bypass it)."""
    done = await run_job(
        target.daemon, f"umount -l {target.key} && echo UNMOUNTED; cat {target.key} 2>&1; true"
    )
    assert "UNMOUNTED" not in done.stdout, "the mount lock must refuse the umount"
    assert not target.leaked(done.stdout + done.stderr)


async def test_remounting_a_cover_writable_fails(target: Target) -> None:
    """Layer: mount lock (a locked mount's read-only flag cannot be cleared)."""
    done = await run_job(
        target.daemon,
        f"mount -o remount,bind,rw {target.state_dir} && echo REMOUNTED; "
        f"touch {target.state_dir}/planted 2>&1; true",
    )
    assert "REMOUNTED" not in done.stdout
    assert not (target.state_dir / "planted").exists()


async def test_binding_the_covered_directorys_parent_without_its_covers_fails(
    target: Target,
) -> None:
    """Layer: mount lock (a non-recursive bind of a tree with locked mounts
    below it would reveal them: refused)."""
    parent = target.state_dir.parent
    done = await run_job(
        target.daemon,
        f"mount --bind {parent} /mnt && echo BOUND; grep -r . /mnt/state /mnt/tls 2>&1; true",
    )
    assert "BOUND" not in done.stdout
    assert not target.leaked(done.stdout + done.stderr)


async def test_moving_a_cover_away_fails(target: Target) -> None:
    """Layer: mount lock (a locked mount cannot be moved off what it covers)."""
    done = await run_job(
        target.daemon,
        f"mount --move {target.state_dir} /mnt && echo MOVED; grep -r . {target.state_dir} 2>&1; "
        "true",
    )
    assert "MOVED" not in done.stdout
    assert not target.leaked(done.stdout + done.stderr)


async def test_over_mounting_a_cover_reveals_nothing(target: Target) -> None:
    """Layers: the job's mount namespace (a mount on top only hides the cover
    from the job itself) and, with the caps/seccomp profile, the mount(2)
    call itself is refused."""
    state = target.state_dir
    done = await run_job(
        target.daemon,
        f"mount -t tmpfs none {state} 2>&1; umount {state} 2>&1; umount {state} 2>&1; "
        f"grep -r . {state} 2>&1; true",
    )
    assert not target.leaked(done.stdout + done.stderr)


async def test_the_key_is_not_reachable_through_proc_1_root(target: Target) -> None:
    """Layer: pid namespace (PID 1 is the job's own rund-init, whose root is
    the job's, covers included)."""
    done = await run_job(
        target.daemon,
        f"cat /proc/1/comm; cat /proc/1/root{target.key} 2>&1; "
        f"grep -r . /proc/1/root{target.state_dir} 2>&1; true",
    )
    assert done.stdout.splitlines()[0] == "rund-init"
    assert not target.leaked(done.stdout + done.stderr)


async def test_a_fresh_procfs_cannot_be_mounted(target: Target) -> None:
    """Layer: user namespace (the PID namespace belongs to the host's user
    namespace: the job's root has no CAP_SYS_ADMIN over it)."""
    done = await run_job(
        target.daemon,
        "mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo MOUNTED; "
        f"cat /tmp/p/1/root{target.key} 2>&1; true",
    )
    assert "MOUNTED" not in done.stdout
    assert not target.leaked(done.stdout + done.stderr)


async def test_a_nested_user_namespace_cannot_mount_a_procfs_either(target: Target) -> None:
    """Layers: mount lock and masked /proc (the kernel lets a new user
    namespace mount proc only where a fully visible one exists; the job's
    has masked entries), and a nested PID namespace shows nothing more."""
    done = await run_job(
        target.daemon,
        "unshare -Urmpf sh -c 'mount -t proc proc /proc && echo MOUNTED; "
        f"cat /proc/1/root{target.key}' 2>&1; true",
    )
    assert "MOUNTED" not in done.stdout
    assert not target.leaked(done.stdout + done.stderr)


async def test_the_covers_are_in_place_for_a_job_running_as_a_user(target: Target) -> None:
    """Layers: covers, and no capability at all for a non-root uid."""
    done = await run_job(
        target.daemon,
        f"id -u; umount {target.key} && echo UNMOUNTED; cat {target.key} 2>&1; true",
        uid=1000,
    )
    assert done.stdout.splitlines()[0] == "1000"
    assert "UNMOUNTED" not in done.stdout
    assert not target.leaked(done.stdout + done.stderr)

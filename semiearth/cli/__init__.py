"""Command-line tools: semiearth-train, semiearth-eval, semiearth-prepare, semiearth-predict.

Every tool's ``main`` is wrapped by :func:`cli_main`, so that what goes wrong outside the tool's own
checks is still one line on stderr naming the problem and the fix, never a traceback:

* ``OSError`` (disk full, read-only file system, permission denied, a path through a file, ...) and
  torch.save's zip-writer failures (``unexpected pos N vs M``: a write that failed, usually a full
  disk), naming the file or the output folder;
* YAML errors with their line and column;
* errors raised inside DataLoader worker processes, which torch re-raises as "Caught LabelError in
  DataLoader worker process 0. Original Traceback ...": unwrapped to the original message (which
  names the file) by :func:`describe`, which the tools' own handlers print too;
* ConfigError / DataError / LabelError that reach it; Ctrl-C (exit 130).

:func:`check_output_dir` and :func:`check_output_file` find an output that cannot be written before
the work starts.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import sys

WEIGHTS_HELP = (  # --weights of semiearth-eval and semiearth-predict (semiearth/train/checkpoint.py)
    "the network to use: a name the checkpoint's method offers (FixMatch, Mean Teacher, UniMatch V2, "
    "supervised: teacher, student; CPS: student_a, student_b, mean); default: the method's own choice"
)


class OutputError(OSError):
    """An output path that cannot be written (checked before the work); the message says why and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


# errno -> (what happened, what to do)
_OS_PROBLEMS = {
    errno.ENOSPC: ("the disk is full", "free space on it or write elsewhere"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space or write elsewhere"),
    errno.EROFS: ("the file system is read-only", "choose a folder on a writable disk"),
    errno.EACCES: ("permission denied", "choose a folder you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to, or fix its permissions"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another path"),
    errno.EISDIR: ("it is a folder, not a file", "name a file"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or lower train.num_workers"),
    errno.EIO: ("an input/output error of the disk", "check the disk"),
}
_TORCH_WRITER = re.compile(r"unexpected pos \d+ vs \d+|PytorchStreamWriter failed|file write failed|basic_ios::clear")
_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback \(most recent call last\):\n")
_EXC_NAME = re.compile(r"^[A-Za-z_][\w.]*(: |$)")


def unwrap_worker_message(text: str) -> str | None:
    """The original message of an exception that torch re-raised from a DataLoader worker, or None."""
    if not _WORKER.match(text):
        return None
    block = text.split("Traceback (most recent call last):\n")[-1]  # the last one raised (chains come first)
    lines = block.rstrip("\n").split("\n")
    first = next((i for i, line in enumerate(lines) if line and not line[0].isspace()), None)
    if first is None:
        return None
    return _EXC_NAME.sub("", "\n".join(lines[first:]), count=1).strip() or lines[first]


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def describe_os_error(err: OSError, out: str | None = None) -> str:
    """One line for an OSError: the file, what happened and what to do."""
    if isinstance(err, OutputError):
        return str(err)
    what, fix = _OS_PROBLEMS.get(err.errno, (err.strerror or str(err), "check the path"))
    files = [f for f in (err.filename, err.filename2) if f is not None]
    where = " -> ".join(os.fsdecode(f) if isinstance(f, bytes) else str(f) for f in files)
    if not where and out:
        where = f"output {out}"
    detail = f" ({err.strerror})" if err.strerror and err.strerror.lower() != what else ""
    return f"{where + ': ' if where else ''}{what}{detail}; {fix}"


def _free_space(path: str | None) -> int | None:
    while path:
        if os.path.isdir(path):
            try:
                return shutil.disk_usage(path).free
            except OSError:
                return None
        parent = os.path.dirname(os.path.abspath(path))
        path = None if parent == os.path.abspath(path) else parent
    return None


def describe(err: BaseException, out: str | None = None) -> str:
    """The message of `err` as the user should read it: worker wrappers unwrapped, OSErrors and
    torch.save write failures worded (found anywhere in the exception's chain)."""
    text = str(err)
    unwrapped = unwrap_worker_message(text)
    if unwrapped is not None:
        return unwrapped
    if isinstance(err, OSError):
        return describe_os_error(err, out)
    if _is_torch_write_error(err):
        cause = next((e for e in _chain(err) if isinstance(e, OSError) and e.errno is not None), None)
        if cause is not None:
            return describe_os_error(cause, out)
        free = _free_space(out)
        space = f"{free / 2**20:.0f} MiB free on the disk of {out}" if free is not None else "no output folder known"
        last = text.strip().splitlines()[-1].split("] . ")[-1] if text.strip() else type(err).__name__
        return (
            f"writing a file failed inside torch.save ({last}): the disk is probably full ({space}); "
            "free space or write elsewhere (the previous checkpoint stays intact)"
        )
    return text


def _is_torch_write_error(err: BaseException) -> bool:
    """torch.save's zip writer failing (a failed write, most often a full disk)."""
    return isinstance(err, RuntimeError) and any(
        isinstance(e, RuntimeError) and _TORCH_WRITER.search(str(e)) for e in _chain(err)
    )


def _option(argv: list[str], name: str) -> str | None:
    """The value of `name` in argv (--out X or --out=X), without parsing the rest."""
    value = None
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(name + "="):
            value = a[len(name) + 1 :]
    return value


def cli_main(prog: str, *, io_code: int = 1, data_code: int = 1, config_code: int = 2, out_option: str = "--out"):
    """Decorator of a tool's ``main(argv)``: whatever its own handlers leave is one line on stderr
    (``prog: error: ...``) and an exit code: OSError and torch write failures `io_code`, YAML and
    config errors `config_code`, data errors (also from DataLoader workers) `data_code`."""

    def wrap(main):
        @functools.wraps(main)
        def run(argv=None):
            from semiearth.config import ConfigError

            args = list(sys.argv[1:] if argv is None else argv)
            out = _option(args, out_option) if out_option else None
            try:
                return main(argv)
            except KeyboardInterrupt:  # semiearth-train handles its own (it saves a checkpoint first)
                print(f"\n{prog}: interrupted (Ctrl-C)", file=sys.stderr)
                return 130
            except ConfigError as err:
                return _fail(prog, f"config error: {describe(err, out)}", config_code)
            except Exception as err:
                import yaml

                from semiearth.data.classes import LabelError
                from semiearth.data.io import DataError

                if isinstance(err, yaml.YAMLError):
                    from semiearth.config import yaml_problem

                    return _fail(prog, f"invalid YAML at {yaml_problem(err)}", config_code)
                if isinstance(err, DataError | LabelError) or unwrap_worker_message(str(err)) is not None:
                    return _fail(prog, f"data error: {describe(err, out)}", data_code)
                if isinstance(err, OSError) or _is_torch_write_error(err):
                    return _fail(prog, describe(err, out), io_code)
                if isinstance(err, UnicodeError) and isinstance(getattr(err, "object", None), str):
                    return _fail(
                        prog,
                        f"cannot handle the name {printable(err.object)!r} ({err.reason}); rename it with UTF-8 characters",
                        io_code,
                    )
                raise

        return run

    return wrap


def _fail(prog: str, text: str, code: int) -> int:
    print(f"{prog}: error: {printable(text)}", file=sys.stderr)
    return code


def printable(text: str) -> str:
    """`text` that prints on any terminal: bytes of file names that are not UTF-8 as \\xNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ----------------------------------------------------------------------------- output checks
def _existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def probe_write(folder: str) -> None:
    """Create and delete an empty file in `folder`: raises the OSError that writing there would."""
    import tempfile

    fd, probe = tempfile.mkstemp(prefix=".semiearth-write-check-", dir=folder)
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str, option: str = "--out") -> None:
    """OutputError (one line naming `option`, the path and the fix) when `path` cannot become a
    folder we write in: it is a file, a part of it is a file, or its disk is read-only / not ours."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(errno.EEXIST, f"{option} {path} is a file; name a folder (it is created if missing)")
    _check_writable(path, option, path)


def check_output_file(path: str, option: str) -> None:
    """OutputError when the file `path` could not be written: a folder, a path through a file, a
    read-only or foreign folder. Its folder may be missing (then the nearest existing one is checked)."""
    if os.path.isdir(path):
        raise OutputError(errno.EISDIR, f"{option} {path} is a folder; name a file")
    _check_writable(os.path.dirname(os.path.abspath(path)), option, path)


def _check_writable(folder: str, option: str, path: str) -> None:
    """OutputError unless the nearest existing ancestor of `folder` is a folder we can write in."""
    base = _existing_ancestor(folder)
    if not os.path.isdir(base):
        raise OutputError(
            errno.ENOTDIR, f"{option} {path}: {base} is a file, not a folder; choose another path for {option}"
        )
    try:
        probe_write(base)
    except OSError as err:
        what, fix = _OS_PROBLEMS.get(err.errno, (err.strerror or str(err), "choose another path"))
        raise OutputError(err.errno, f"{option} {path}: cannot write in {base}: {what}; {fix}") from None

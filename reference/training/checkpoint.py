"""Checkpoints: a nested payload in one ``.npz`` file, written atomically, verified by a sha256 on load.

A payload is a dict of nested dicts, lists and tuples whose leaves are numpy arrays, numpy scalars, or JSON
values (``int``, ``float``, ``bool``, ``str``, ``None``). The training loop saves, for example::

    {"params": params, "opt_state": state, "step": 1200, "config": dataclasses.asdict(config),
     "tokenizer": tok.to_json(), "rng": rng_to_json(rng)}

and ``load`` gives back an equal payload: the same nesting and types, and arrays with the same dtype, shape
and bits.

File format
-----------
A ``.npz`` (a zip of ``.npy`` files, stored uncompressed), so ``np.load`` can read it too:

- each array leaf is a member named by its path, ``params/blocks/0/attn/Wq.npy`` (dict keys must be non-empty
  strings without ``/``, so paths are unique);
- ``__manifest__.json`` holds the nesting, the JSON leaves, and which path holds each array;
- the zip comment, the last 64 bytes of the file, is the hex sha256 of every byte before it. ``load`` checks it
  before parsing anything, so a truncated file or any flipped bit is refused with an error naming the file.

Atomic writes
-------------
``save`` writes a temporary file in the target's directory, flushes and fsyncs it, renames it over the target
with ``os.replace`` (atomic on POSIX), then fsyncs the directory so the rename itself survives a power cut.
A crash at any moment leaves either the previous checkpoint or the new one, never a mixture. A kill during the
write can leave a stray ``.<name>.<pid>.<random>.tmp`` file next to it, which nothing reads; the next ``save`` to
that name removes those whose process is gone.

The new file gets the mode the umask gives any new file (0644 under the usual umask 022), like the log beside it.
Saving to a symbolic link writes the file it points to and keeps the link.
"""
import hashlib
import io
import json
import os
import re
import secrets
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib.format import read_array, write_array

FORMAT = "lm-primer-checkpoint"
VERSION = 1
MANIFEST = "__manifest__.json"
DIGEST_LEN = 64                      # hex sha256
_EOCD_LEN = 22                       # the smallest zip: its end-of-central-directory record
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


class CheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupted, or not a checkpoint."""


def _encode(obj, path, arrays):
    """The manifest node of ``obj``; array leaves go into ``arrays`` under their path."""
    where = path or "<root>"
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, str):
                raise TypeError(f"payload at '{where}': expected str keys, got {type(k).__name__} {k!r}")
            if not k or "/" in k:
                raise ValueError(f"payload at '{where}': keys must be non-empty and contain no '/', got {k!r}")
        return {"dict": {k: _encode(v, f"{path}/{k}" if path else k, arrays) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return {kind: [_encode(v, f"{path}/{i}" if path else str(i), arrays) for i, v in enumerate(obj)]}
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.hasobject:
            raise TypeError(f"payload at '{where}': object arrays cannot be stored safely, got dtype {obj.dtype}")
        arrays[path] = np.asarray(obj)
        return {"array" if isinstance(obj, np.ndarray) else "scalar": path}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"payload at '{where}': expected a dict, list, tuple, numpy array or scalar, or a JSON value "
                    f"(int, float, bool, str, None), got {type(obj).__name__}")


def _decode(node, arrays):
    (kind, val), = node.items()
    if kind == "dict":
        return {k: _decode(v, arrays) for k, v in val.items()}
    if kind == "list":
        return [_decode(v, arrays) for v in val]
    if kind == "tuple":
        return tuple(_decode(v, arrays) for v in val)
    if kind == "array":
        return arrays[val]
    if kind == "scalar":
        return arrays[val][()]
    if kind == "value":
        return val
    raise KeyError(f"unknown manifest node {kind!r}")


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(path, payload):
    """Write ``payload`` to ``path`` atomically, with a sha256 checksum.

    Parameters
    ----------
    path : str or pathlib.Path
        The target file (conventionally ``*.npz``); its directory must exist.
    payload : dict
        Nested dicts, lists and tuples of numpy arrays, numpy scalars and JSON values.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"payload: expected a dict, got {type(payload).__name__}")
    arrays = {}
    manifest = json.dumps({"format": FORMAT, "version": VERSION, "tree": _encode(payload, "", arrays)})
    target = Path(os.path.realpath(path))       # through symbolic links: replace the file, keep the link
    directory = target.parent
    _remove_stale_temporaries(target)
    tmp = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open applies the umask to 0o666, as open() does for the log; mkstemp would force 0o600
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w+b") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr(MANIFEST, manifest)
                for key, arr in arrays.items():
                    with zf.open(key + ".npy", "w", force_zip64=True) as member:
                        write_array(member, arr, allow_pickle=False)
                zf.comment = b"0" * DIGEST_LEN          # placeholder, overwritten with the digest below
            size = f.tell()
            f.seek(0)
            h = hashlib.sha256()
            remaining = size - DIGEST_LEN
            while remaining:
                chunk = f.read(min(remaining, 1 << 20))
                h.update(chunk)
                remaining -= len(chunk)
            f.seek(size - DIGEST_LEN)
            f.write(h.hexdigest().encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return Path(path)


def _remove_stale_temporaries(target):
    """Delete the temporary files of earlier saves to ``target`` whose process no longer runs (killed mid-save)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")
    for entry in os.scandir(target.parent):
        m = pattern.fullmatch(entry.name)
        if m and not _process_alive(int(m.group(1))):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass


def _process_alive(pid):
    if pid == os.getpid():
        return False                  # this process writes one file at a time: an older temporary of ours is stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                   # it exists, under another user
    return True


def load(path):
    """Read a checkpoint written by ``save``, after verifying its checksum.

    Returns
    -------
    dict
        The payload, with the nesting, types, dtypes and bits it was saved with.

    Raises
    ------
    CheckpointError
        If the file is truncated, corrupted (any byte changed), or not a checkpoint; the message names the file.
    FileNotFoundError
        If there is no file at ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; expected a checkpoint file such as "
                              f"{path / 'checkpoint.npz'}")
    data = path.read_bytes()
    if len(data) < _EOCD_LEN + DIGEST_LEN:
        raise CheckpointError(f"checkpoint {path} is truncated or not a checkpoint: {len(data)} bytes, fewer than "
                              f"the {_EOCD_LEN + DIGEST_LEN} of an empty one")
    stored = data[-DIGEST_LEN:]
    actual = hashlib.sha256(data[:-DIGEST_LEN]).hexdigest()
    if stored != actual.encode("ascii"):
        _refuse_foreign(path, data)
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted: its content has sha256 {actual}, but "
                              f"the checksum stored at its end reads {stored[:DIGEST_LEN]!r}; "
                              f"use an earlier checkpoint")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            manifest = json.loads(zf.read(MANIFEST))
            if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
                raise ValueError(f"format {manifest.get('format')!r} version {manifest.get('version')!r}")
            arrays = {}
            for name in zf.namelist():
                if name != MANIFEST:
                    with zf.open(name) as member:
                        arrays[name[:-len(".npy")]] = read_array(member, allow_pickle=False)
            return _decode(manifest["tree"], arrays)
    except (zipfile.BadZipFile, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path} has a valid checksum but is not a {FORMAT} version {VERSION} "
                              f"file: {err}") from err


def _refuse_foreign(path, data):
    """Raise CheckpointError if ``data`` is clearly another kind of file, not a damaged checkpoint.

    A single flipped bit or a cut cannot make a checkpoint look like this: a file that neither starts nor ends
    like a zip, or a readable zip that has neither our manifest nor a checksum-sized comment (an ordinary .npz).
    """
    is_zip_start = data.startswith(b"PK\x03\x04")
    has_zip_end = b"PK\x05\x06" in data[-(_EOCD_LEN + 0xFFFF):]
    if not is_zip_start and not has_zip_end:
        raise CheckpointError(f"{path} is not a {FORMAT} file: it is not a zip (.npz) archive "
                              f"(it starts with {data[:8]!r})")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names, comment = zf.namelist(), zf.comment
    except (zipfile.BadZipFile, ValueError, OSError):
        return
    if MANIFEST not in names and len(comment) != DIGEST_LEN:
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise CheckpointError(f"{path} is a zip archive (an ordinary .npz?) holding {shown or 'nothing'}, not a "
                              f"{FORMAT} file: it has no {MANIFEST} and no checksum")


def rng_to_json(rng):
    """The state of a ``numpy.random.Generator`` as a JSON string (``rng.bit_generator.state``)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return json.dumps(rng.bit_generator.state, default=lambda a: a.tolist() if isinstance(a, np.ndarray) else a)


def rng_from_json(s):
    """A ``numpy.random.Generator`` in the state that ``rng_to_json`` wrote; it draws what the original would."""
    state = json.loads(s)
    name = state.get("bit_generator")
    if name not in _BIT_GENERATORS:
        raise ValueError(f"rng state: expected a bit generator in {_BIT_GENERATORS}, got {name!r}")
    if name == "MT19937":
        state["state"]["key"] = np.asarray(state["state"]["key"], dtype=np.uint32)
    bit_generator = getattr(np.random, name)()
    bit_generator.state = state
    return np.random.Generator(bit_generator)

"""Token folders that travel between GPU sessions, so that the training data accumulates.

    python3 distill/token_pack.py pack W/data/tokens W/tokens_pack [--max-mib 9]     # there, after a chain
    python3 distill/token_pack.py unpack .carry/tokens-run2 W/prior/tokens-run2      # there, next session
    python3 distill/token_pack.py priors W/prior --codec weights/codec [--seed N] --out W
    python3 distill/token_pack.py next-seed ~/.cache/parley/packs                     # here: cpu_prior.sh's seed
    parley distill pack-tokens / unpack-tokens                                         # the same, via the CLI

A pack (DEST/) is a deterministic tar.gz of a token folder (``manifest.json`` with only the
sealed shards whose .npz exists, plus the trace store's ``seed``; then those .npz files), cut
into parts of at most ``max_mib`` MiB that each fit a device call:

    tokens.index.json   format, codec_id, seed, shards, traces, turns, agent_hours, the whole
                        tar.gz's bytes + sha256, parts [{file, bytes, sha256}]
    tokens.part00 ...   the tar.gz, cut

``unpack`` waits (returns ``incomplete``) until every part has come, checks each sha256 and the
whole, refuses a pack tokenized with another codec, and extracts into DEST atomically.
``priors`` checks the unpacked folders before a chain: a folder of another codec, or of a seed an
earlier folder has, is refused (one line; the chain goes on without it); the session's seed
defaults to one after the largest prior seed (at least 2: run 1 used 0), and a SEED that a prior
already used is refused (its traces would repeat).

Run as a file (the stage phase, before the kit is installed) it needs the standard library and
numpy; ``--codec`` imports ``codec.io`` (torch).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # run as a file, its folder leads sys.path and distill/tokenize.py would shadow
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the stdlib's: the repo root

import argparse
import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from distill.store import write_json_atomic
from distill.tokens import load_manifest, token_dir
from model.common.checkpoint import file_sha256
from model.common.errors import ParleyError

MIB = 2**20
INDEX = "tokens.index.json"
PACK_FORMAT = "parley-token-pack-v1"
CHUNK = 4 * MIB


def _part(i: int) -> str:
    return f"tokens.part{i:02d}"


def natural_key(name: str) -> list:
    """Sort key that puts run2 before run10."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def _trace_seed(tdir: Path, man: dict) -> int | None:
    """The seed of the trace store the tokens came from (its manifest.json), else the manifest's own."""
    for store in ([Path(man["source"])] if man.get("source") else []) + [tdir.parent]:
        f = store / "manifest.json"
        if f.exists():
            trace_man = json.loads(f.read_text())
            if trace_man.get("format") == "parley-traces-v1" and trace_man.get("seed") is not None:
                return int(trace_man["seed"])
    return man.get("seed")


def _tar_member(tar: tarfile.TarFile, name: str, data: io.BufferedIOBase, size: int) -> None:
    info = tarfile.TarInfo(name)  # fixed owner, mode and time: the same folder gives the same bytes
    info.size, info.mode, info.mtime = size, 0o644, 0
    tar.addfile(info, data)


def pack_tokens(src: Path, dest: Path, max_mib: float = 9.0) -> dict:
    """Pack the sealed shards of token folder ``src`` into ``dest`` (its earlier parts and index are
    removed first; nothing else) -> the index. The same selection already packed there is kept as it
    is (a later call may bring more parts)."""
    tdir = token_dir(src)
    man = load_manifest(tdir)
    keep = {k: v for k, v in sorted(man["shards"].items()) if v.get("sealed") and (tdir / v["file"]).exists()}
    if not keep:
        raise ParleyError(f"{tdir}: no sealed token shards to pack")
    packed = {**man, "shards": keep, "seed": _trace_seed(tdir, man)}
    blob = json.dumps(packed, indent=1, sort_keys=True).encode()
    selection = hashlib.sha256(blob).hexdigest()
    dest = Path(dest)
    old = json.loads((dest / INDEX).read_text()) if (dest / INDEX).exists() else {}
    if old.get("selection") == selection and all(
            (dest / p["file"]).exists() and (dest / p["file"]).stat().st_size == p["bytes"] for p in old["parts"]):
        return old
    dest.mkdir(parents=True, exist_ok=True)
    for f in [*dest.glob("tokens.part[0-9]*"), dest / INDEX]:
        f.unlink(missing_ok=True)
    whole = dest / ".tokens.tar.gz.tmp"
    with open(whole, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _tar_member(tar, "manifest.json", io.BytesIO(blob), len(blob))
        for v in keep.values():
            f = tdir / v["file"]
            with open(f, "rb") as fh:
                _tar_member(tar, v["file"], fh, f.stat().st_size)
    size, step, parts = whole.stat().st_size, max(1, int(max_mib * MIB)), []
    with open(whole, "rb") as fh:
        for i in range(-(-size // step)):
            p = dest / _part(i)
            p.write_bytes(fh.read(step))
            parts.append({"file": p.name, "bytes": p.stat().st_size, "sha256": file_sha256(p)})
    index = {
        "format": PACK_FORMAT, "codec_id": man.get("codec_id"), "seed": packed["seed"], "shards": len(keep),
        "traces": sum(v.get("traces", 0) for v in keep.values()),
        "turns": sum(v.get("turns", 0) for v in keep.values()),
        "agent_hours": round(sum(v.get("frames_agent", 0) for v in keep.values()) / float(man["frame_rate"]) / 3600, 3),
        "left_out": len(man["shards"]) - len(keep), "bytes": size, "sha256": file_sha256(whole), "selection": selection,
        "max_mib": max_mib, "parts": parts,
    }
    whole.unlink()
    write_json_atomic(dest / INDEX, index)
    return index


def pack_summary(index: dict) -> str:
    """The index as one JSON line, parts counted."""
    short = {k: v for k, v in index.items() if k not in ("parts", "selection")}
    return json.dumps(short | {"parts": len(index["parts"])})


@dataclass
class Unpacked:
    """What ``unpack_tokens`` did: ``state`` is unpacked, present (done before) or incomplete."""

    state: str
    index: dict
    missing: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        i = self.index
        if self.state == "incomplete":
            return f"{name}: {len(i['parts']) - len(self.missing)} of {len(i['parts'])} parts here, waiting for " \
                   f"{' '.join(self.missing)}"
        return (f"{name}: {self.state}, seed {i['seed']}, {i['shards']} shards, {i['turns']} turns, "
                f"{i['agent_hours']} h of agent speech, codec {i['codec_id']}")


def codec_id_of(codec: Path) -> str:
    """The id tokens are tied to (codec.io.codec_id; imports torch)."""
    from codec.io import codec_id

    return codec_id(codec)


def refuse_codec(name: str, theirs: str | None, ours: str, codec: Path) -> None:
    """Raise the one-line refusal when a prior's codec is not this session's."""
    if theirs != ours:
        raise ParleyError(f"prior {name} refused: tokenized with codec {theirs}, this session's codec {codec} is "
                          f"{ours} (tokens are tied to the codec version)")


def unpack_tokens(carried: Path, dest: Path, codec: Path | None = None) -> Unpacked:
    """Parts + index in ``carried`` -> the token folder ``dest`` (once every part is there and sound)."""
    carried, dest = Path(carried), Path(dest)
    if not (carried / INDEX).exists():
        raise ParleyError(f"no {INDEX} in {carried}: carry the index with the parts")
    index = json.loads((carried / INDEX).read_text())
    if index.get("format") != PACK_FORMAT:
        raise ParleyError(f"{carried / INDEX}: not a token pack (format {index.get('format')!r})")
    done = dest / "pack.json"
    if done.exists() and json.loads(done.read_text()).get("sha256") == index["sha256"]:
        return Unpacked("present", index)
    if dest.exists() and any(dest.iterdir()) and not done.exists():
        raise ParleyError(f"{dest} exists and holds no unpacked pack: not replaced")
    missing = [p["file"] for p in index["parts"] if not (carried / p["file"]).exists()]
    if missing:
        return Unpacked("incomplete", index, missing)
    for p in index["parts"]:
        f = carried / p["file"]
        if f.stat().st_size != p["bytes"] or file_sha256(f) != p["sha256"]:
            raise ParleyError(f"{f}: size or sha256 differs from {INDEX} (damaged on the way): carry it again")
    if codec is not None:
        refuse_codec(carried.name, index["codec_id"], codec_id_of(codec), codec)
    tmp = dest.with_name(f".{dest.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    whole = tmp / ".whole.tar.gz"
    with open(whole, "wb") as out:
        for p in index["parts"]:
            with open(carried / p["file"], "rb") as fh:
                shutil.copyfileobj(fh, out, CHUNK)
    if file_sha256(whole) != index["sha256"]:
        raise ParleyError(f"{carried}: the joined parts' sha256 differs from {INDEX}")
    with tarfile.open(whole, "r:gz") as tar:
        for m in tar.getmembers():  # plain files in one folder only
            if not m.isfile() or "/" in m.name or m.name.startswith("."):
                raise ParleyError(f"{carried}: unexpected member {m.name!r} in the pack")
            src = tar.extractfile(m)
            assert src is not None
            with open(tmp / m.name, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
    whole.unlink()
    write_json_atomic(tmp / "pack.json", index)
    load_manifest(tmp)  # a readable token manifest came out
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return Unpacked("unpacked", index)


@dataclass
class Priors:
    """The prior token folders a chain trains on, and its seed."""

    seed: int
    folders: list[Path]  # accepted, oldest first (natural order of the names)
    lines: list[str]  # one per folder ("prior NAME refused: why" for a refused one)


def seed_after(seeds, at_least: int) -> int:  # noqa: ANN001
    """A new session's seed: one after the largest seed used (each seed's traces exist once)."""
    return max(at_least, 1 + max(seeds, default=at_least - 1))


def pack_seeds(packs: Path) -> list[int]:
    """The seeds of the packs ``packs/tokens-*`` (their indexes; before any unpacking)."""
    idx = (json.loads(f.read_text()) for f in Path(packs).glob(f"tokens-*/{INDEX}"))
    return [int(i["seed"]) for i in idx if i.get("seed") is not None]


def check_priors(root: Path, codec: Path | None, seed: int | None = None) -> Priors:
    """Check the unpacked folders in ``root`` against this session's codec and seed."""
    root = Path(root)
    dirs = sorted((d for d in root.iterdir() if (d / "manifest.json").exists()), key=lambda d: natural_key(d.name)) \
        if root.is_dir() else []
    ours = codec_id_of(codec) if codec is not None and dirs else None
    folders, lines, seeds = [], [], {}
    for d in dirs:
        man = load_manifest(d)
        try:
            if ours is not None:
                refuse_codec(d.name, man.get("codec_id"), ours, codec)  # type: ignore[arg-type]
            if man.get("seed") is not None and int(man["seed"]) in seeds:
                raise ParleyError(f"prior {d.name} refused: seed {man['seed']} as prior {seeds[int(man['seed'])]} "
                                  "(the same traces twice)")
        except ParleyError as e:
            lines.append(str(e))
            continue
        turns = sum(v.get("turns", 0) for v in man["shards"].values())
        folders.append(d)
        if man.get("seed") is not None:
            seeds[int(man["seed"])] = d.name
        lines.append(f"prior {d.name}: seed {man.get('seed')}, {len(man['shards'])} shards, {turns} turns")
    chosen = seed if seed is not None else seed_after(seeds, at_least=2)
    if chosen in seeds:
        raise ParleyError(f"SEED {chosen} was used by prior {seeds[chosen]}: its traces would repeat "
                          "(pick another SEED)")
    return Priors(chosen, folders, lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="token_pack.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="token folder -> tar.gz parts + index")
    a.add_argument("src", type=Path)
    a.add_argument("dest", type=Path)
    a.add_argument("--max-mib", type=float, default=9.0)
    a = sub.add_parser("unpack", help="parts + index -> token folder")
    a.add_argument("carried", type=Path)
    a.add_argument("dest", type=Path)
    a.add_argument("--codec", type=Path, default=None, help="refuse a pack of another codec")
    a = sub.add_parser("priors", help="check unpacked priors; write OUT/seed and OUT/priors.txt")
    a.add_argument("root", type=Path)
    a.add_argument("--codec", type=Path, required=True)
    a.add_argument("--seed", type=int, default=None)
    a.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("next-seed", help="one after the largest seed of the packs in a folder (at least 1)")
    a.add_argument("packs", type=Path)
    args = p.parse_args(argv)
    try:
        if args.cmd == "pack":
            print(pack_summary(pack_tokens(args.src, args.dest, args.max_mib)))
        elif args.cmd == "unpack":
            print(unpack_tokens(args.carried, args.dest, args.codec).line(args.carried.name))
        elif args.cmd == "next-seed":
            print(seed_after(pack_seeds(args.packs), at_least=1))
        else:
            pr = check_priors(args.root, args.codec, args.seed)
            print("\n".join(pr.lines + [f"seed {pr.seed}" + ("" if args.seed is not None else
                                                             " (SEED unset: one after the largest prior seed, >= 2)")]))
            (args.out / "seed").write_text(f"{pr.seed}\n")
            (args.out / "priors.txt").write_text("".join(f"{d}\n" for d in pr.folders))
    except ParleyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

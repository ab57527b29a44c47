#!/usr/bin/env python3
"""Derive the expected binary shape of ndkpi.h from the specification.

Run by a developer (never by CI or the build) whenever the specification changes:

    python3 tests/header/derive_expectations.py [--spec DIR] [--out FILE] [--check]

It reads INVENTORY.md and NOTES.md from the specification directory (default:
../shared/spec next to the repository, or $SOFTNDK_SPEC_DIR) and writes
tests/header/expected_layout.inc, which is committed. The header tests include that file
and never read the specification themselves, so a clone without the specification still
builds and runs them.

Everything in the output comes from the specification text, never from ndkpi.h: member
names and their order, member types, parameter lists, numeric values. The only knowledge
the script adds is the width/alignment table of the Windows base types on an LP64 host
(WIDTHS below; NOTES.md states the same widths and the script cross-checks them), and
ordinary C layout rules (natural alignment, structure padded to its largest alignment).

When the text does not say something the script needs, it stops with an error instead
of guessing.

--check compares the freshly derived output with the committed file and exits non-zero
when they differ.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class SpecError(Exception):
    pass


def fail(msg: str) -> None:
    raise SpecError(msg)


# --------------------------------------------------------------------------- widths --
# (size, alignment) of the Windows types on an LP64 Linux host with Windows integer
# widths. Pointer-like names are handled by is_pointer_type().
WIDTHS: dict[str, tuple[int, int]] = {
    "UCHAR": (1, 1), "CHAR": (1, 1), "BOOLEAN": (1, 1),
    "USHORT": (2, 2), "SHORT": (2, 2),
    "ULONG": (4, 4), "LONG": (4, 4), "NTSTATUS": (4, 4), "NDIS_STATUS": (4, 4),
    "UINT32": (4, 4), "INT32": (4, 4),
    "ULONG64": (8, 8), "UINT64": (8, 8), "LONG64": (8, 8), "SIZE_T": (8, 8),
    "ULONG_PTR": (8, 8), "PVOID": (8, 8),
    "PHYSICAL_ADDRESS": (8, 8),          # LARGE_INTEGER
    # Types that INVENTORY names without a layout (its §6), with their Windows shapes:
    "GUID": (16, 4),                     # ULONG, USHORT, USHORT, UCHAR[8]
    "SOCKADDR_INET": (28, 4),            # union of sockaddr_in / sockaddr_in6
    "NDIS_OBJECT_HEADER": (4, 2),        # UCHAR Type; UCHAR Revision; USHORT Size
    "NDIS_NIC_SWITCH_ID": (4, 4),        # ULONG
    "NDIS_NIC_SWITCH_VPORT_ID": (4, 4),  # ULONG
}
ENUM_SIZE = (4, 4)
POINTER = (8, 8)

# Windows shape of NDIS_OBJECT_HEADER (INVENTORY §6.3 names Type/Revision/Size only).
NDIS_OBJECT_HEADER_MEMBERS = [("UCHAR", "Type"), ("UCHAR", "Revision"), ("USHORT", "Size")]

# Sizes the task statement fixes; the derivation must reproduce them.
KNOWN_SIZES = {
    "NDK_VERSION": (4, 2),
    "NDK_OBJECT_HEADER": (40, 8),
    "NDK_ADAPTER_INFO": (104, 8),
    "NDIS_NDK_PERFORMANCE_COUNTERS": (240, 8),
}


# ------------------------------------------------------------------------- model --
@dataclass
class Member:
    type: str                 # C type spelling, e.g. "CONST NDK_CQ_DISPATCH *"
    name: str
    count: int | None = None  # array extent, None for a scalar
    union_group: int | None = None  # members sharing storage (anonymous union)


@dataclass
class Struct:
    name: str
    members: list[Member]
    source: str
    kind: str = "struct"      # struct | dispatch | object


@dataclass
class FnType:
    fid: int
    name: str
    ret: str
    params: list[tuple[str, str]]  # (type, name)


@dataclass
class Spec:
    structs: dict[str, Struct] = field(default_factory=dict)
    fns: dict[str, FnType] = field(default_factory=dict)
    enums: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    values: list[tuple[str, int, str]] = field(default_factory=list)  # name, value, group
    names_only: list[tuple[str, str]] = field(default_factory=list)   # name, why
    size_macros: list[tuple[str, str, str]] = field(default_factory=list)  # macro, struct, last member
    size_macros_n: list[tuple[str, str, str]] = field(default_factory=list)  # macro, struct, array
    typedefs: list[tuple[str, str]] = field(default_factory=list)


# ------------------------------------------------------------------ text helpers --
def section(text: str, start_re: str, end_re: str, what: str) -> str:
    m = re.search(start_re, text, re.M)
    if not m:
        fail(f"cannot find {what} (pattern {start_re!r})")
    rest = text[m.end():]
    e = re.search(end_re, rest, re.M)
    return rest[: e.start()] if e else rest


def one(pattern: str, text: str, what: str, flags: int = 0) -> re.Match:
    ms = list(re.finditer(pattern, text, flags))
    if len(ms) != 1:
        fail(f"expected exactly one match for {what}, found {len(ms)} (pattern {pattern!r})")
    return ms[0]


def parse_int(s: str) -> int:
    s = s.strip()
    if re.fullmatch(r"0[xX][0-9A-Fa-f]+", s):
        return int(s, 16)
    if re.fullmatch(r"\d+", s):
        return int(s)
    fail(f"not an integer: {s!r}")
    return 0


def norm_type(tokens: list[str]) -> str:
    out = ""
    for t in tokens:
        if t == "*":
            out += "*" if out.endswith("*") else " *"
        else:
            out += (" " if out else "") + t
    return out.strip()


def parse_decl(decl: str, where: str) -> Member:
    """'CONST NDK_CQ_DISPATCH *Dispatch' -> Member('CONST NDK_CQ_DISPATCH *', 'Dispatch')."""
    decl = decl.strip()
    toks = re.findall(r"[A-Za-z_]\w*|\*|\[\s*\d*\s*\]|\S", decl)
    count = None
    if toks and toks[-1].startswith("["):
        inner = toks.pop()[1:-1].strip()
        if not inner:
            fail(f"{where}: open array in a structure member: {decl!r}")
        count = int(inner)
    if len(toks) < 2 or not re.fullmatch(r"[A-Za-z_]\w*", toks[-1]):
        fail(f"{where}: cannot parse member declaration {decl!r}")
    name = toks.pop()
    for t in toks:
        if not (t == "*" or re.fullmatch(r"[A-Za-z_]\w*", t)):
            fail(f"{where}: unexpected token {t!r} in {decl!r}")
    return Member(norm_type(toks), name, count)


def parse_member_list(body: str, where: str) -> list[Member]:
    """Parse 'T a; union { T b; U c; }; V d;' into members (union members share a group)."""
    members: list[Member] = []
    body = " ".join(body.split())
    group = 0
    pos = 0
    while pos < len(body):
        rest = body[pos:].lstrip()
        if not rest:
            break
        pos = len(body) - len(rest)
        um = re.match(r"union\s*\{(.*?)\}\s*;", rest)
        if um:
            group += 1
            inner = [d for d in um.group(1).split(";") if d.strip()]
            if len(inner) < 2:
                fail(f"{where}: union with fewer than two members")
            for d in inner:
                m = parse_decl(d, where)
                m.union_group = group
                members.append(m)
            pos += um.end()
            continue
        semi = rest.find(";")
        if semi < 0:
            fail(f"{where}: member list does not end with ';': {rest!r}")
        members.append(parse_decl(rest[:semi], where))
        pos += semi + 1
    if not members:
        fail(f"{where}: empty member list")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        fail(f"{where}: duplicate member names {names}")
    return members


# --------------------------------------------------------------- §1 dispatch tables --
def parse_objects(inv: str, spec: Spec) -> dict[str, int]:
    s1 = section(inv, r"^## 1\. Object types", r"^## 2\.", "INVENTORY §1")
    tmpl = one(r"Every object is a two-member structure `\{(.*?)\}`", s1, "object template").group(1)
    if "<T>" not in tmpl:
        fail("object template lacks <T>")
    subs = re.split(r"^### 1\.(\d+) ", s1, flags=re.M)
    objtypes: dict[str, int] = {}
    n_tables = 0
    counts: dict[str, int] = {}
    for i in range(1, len(subs), 2):
        body = subs[i + 1]
        head = body.splitlines()[0]
        hm = re.match(r"(NDK_\w+) — `(NdkObjectType\w+)` = (\d+)\s*$", head)
        if not hm:
            continue  # 1.11 relations, 1.12 totals
        obj, enumname, val = hm.group(1), hm.group(2), int(hm.group(3))
        objtypes[enumname] = val
        sm = one(r"^- Struct `(\w+)`", body, f"§1.{subs[i]} struct name", re.M)
        if sm.group(1) != obj:
            fail(f"§1.{subs[i]}: struct {sm.group(1)} != heading {obj}")
        dm = one(r"^- Dispatch `(\w+)` \([^)]*\), (\d+) members:(.*?)(?=^- |\Z)", body,
                 f"§1.{subs[i]} dispatch", re.M | re.S)
        dname, n = dm.group(1), int(dm.group(2))
        entries = re.findall(r"(\d+) `(\w+)` : (\w+)", dm.group(3))
        if [int(e[0]) for e in entries] != list(range(1, n + 1)):
            fail(f"{dname}: member numbering {[e[0] for e in entries]} is not 1..{n}")
        members = [Member(fn, name) for _, name, fn in entries]
        spec.structs[dname] = Struct(dname, members, f"INVENTORY §1.{subs[i]}", "dispatch")
        tbase = dname[: -len("_DISPATCH")]
        if tbase != obj:
            fail(f"dispatch {dname} does not belong to {obj}")
        omembers = parse_member_list(tmpl.replace("<T>", tbase), f"object {obj}")
        spec.structs[obj] = Struct(obj, omembers, f"INVENTORY §1 template, §1.{subs[i]}", "object")
        counts[dname] = n
        n_tables += 1
    tot = one(r"^(\d+) tables, (\d+) entries: (.*)$", s1, "§1.12 totals", re.M)
    if int(tot.group(1)) != n_tables or int(tot.group(2)) != sum(counts.values()):
        fail(f"§1.12 says {tot.group(1)} tables / {tot.group(2)} entries, parsed "
             f"{n_tables} / {sum(counts.values())}")
    if n_tables != 10 or sum(counts.values()) != 70:
        fail("expected 10 dispatch tables with 70 entries")
    um = one(r"`NdkObjectTypeUndefined` = (\d+) and `NdkObjectTypeMax` = (\d+)", s1, "§1 Undefined/Max")
    objtypes["NdkObjectTypeUndefined"] = int(um.group(1))
    objtypes["NdkObjectTypeMax"] = int(um.group(2))
    return objtypes


# ------------------------------------------------------------ §2 function types --
SAL_RE = re.compile(r"(_[A-Za-z][A-Za-z_]*?_)(?=[\s(])\s*(\([^()]*\))?\s*")
# The annotations §2 uses; anything else is reported rather than silently dropped.
KNOWN_SAL = {
    "_In_", "_In_opt_", "_Out_", "_Out_opt_", "_Inout_", "_Inout_opt_", "_Outptr_",
    "_Outptr_opt_", "_In_reads_", "_In_reads_opt_", "_In_reads_bytes_", "_In_reads_bytes_opt_",
    "_Out_writes_", "_Out_writes_to_", "_Out_writes_bytes_", "_Out_writes_bytes_opt_",
    "_Out_writes_bytes_to_opt_",
}


def split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def parse_param(p: str, where: str) -> tuple[str, str]:
    orig = p
    while True:
        m = SAL_RE.match(p)
        if not m or not m.group(0).strip():
            break
        if m.group(1) not in KNOWN_SAL:
            fail(f"{where}: unknown annotation {m.group(1)} in parameter {orig!r}")
        p = p[m.end():]
    if p.startswith("_"):
        fail(f"{where}: unrecognised annotation in parameter {orig!r}")
    toks = re.findall(r"[A-Za-z_]\w*|\*|\[\s*\]|\S", p)
    is_array = False
    if toks and toks[-1].startswith("["):
        toks.pop()
        is_array = True
    if len(toks) < 2 or not re.fullmatch(r"[A-Za-z_]\w*", toks[-1]):
        fail(f"{where}: cannot parse parameter {orig!r}")
    name = toks.pop()
    for t in toks:
        if not (t == "*" or re.fullmatch(r"[A-Za-z_]\w*", t)):
            fail(f"{where}: unexpected token {t!r} in parameter {orig!r}")
    # A top-level qualifier ('CONST PSOCKADDR p', 'CONST PVOID p') is not part of the
    # function type: the parameter's type is the unqualified one.
    if len(toks) == 2 and toks[0] == "CONST" and toks[1] != "*":
        toks = toks[1:]
    if "CONST" in toks and toks.index("CONST") != 0:
        fail(f"{where}: CONST in an unexpected position in {orig!r}")
    if is_array:  # 'NDK_RESULT Results[]' is a pointer parameter
        toks.append("*")
    return norm_type(toks), name


def parse_functions(inv: str, spec: Spec) -> None:
    s2 = section(inv, r"^## 2\. Function types \((\d+)\)", r"^## 3\.", "INVENTORY §2")
    declared = int(one(r"^## 2\. Function types \((\d+)\)", inv, "§2 count", re.M).group(1))
    heads = list(re.finditer(r"^\*\*F(\d+) (\w+)\*\*", s2, re.M))
    for k, h in enumerate(heads):
        fid, name = int(h.group(1)), h.group(2)
        end = heads[k + 1].start() if k + 1 < len(heads) else len(s2)
        body = s2[h.end():end]
        sm = one(r"^- Sig: `(.*)`\s*$", body, f"F{fid:02d} Sig line", re.M)
        sig = sm.group(1)
        m = re.fullmatch(r"(\w+) \(\*(\w+)\)\((.*)\)", sig)
        if not m:
            fail(f"F{fid:02d}: cannot parse signature {sig!r}")
        ret, sname, plist = m.groups()
        if sname != name:
            fail(f"F{fid:02d}: signature names {sname}, heading {name}")
        params = [parse_param(p, f"F{fid:02d} {name}") for p in split_top(plist)]
        names = [p[1] for p in params]
        if len(set(names)) != len(names):
            fail(f"F{fid:02d}: duplicate parameter names {names}")
        if name in spec.fns:
            fail(f"F{fid:02d}: {name} declared twice")
        spec.fns[name] = FnType(fid, name, ret, params)
    ids = sorted(f.fid for f in spec.fns.values())
    if ids != list(range(1, declared + 1)) or declared != 63:
        fail(f"§2 declares {declared} function types, parsed ids {ids}")


# --------------------------------------------------------------- §3 structures --
def parse_structures(inv: str, notes: str, spec: Spec) -> None:
    s3 = section(inv, r"^## 3\. Structures", r"^## 4\.", "INVENTORY §3")
    heads = list(re.finditer(r"^- \*\*S(\d+[a-z]?) ([^*]+)\*\*", s3, re.M))
    seen = set()
    for k, h in enumerate(heads):
        sid, title = h.group(1), h.group(2).strip()
        end = heads[k + 1].start() if k + 1 < len(heads) else len(s3)
        body = s3[h.end():end]
        seen.add(sid)
        if title.startswith("typedef "):
            tm = one(r"`typedef (\w+) (\w+);`", body, f"S{sid} typedef")
            if tm.group(2) not in title:
                fail(f"S{sid}: typedef {tm.group(2)} does not match title {title!r}")
            spec.typedefs.append((tm.group(2), tm.group(1)))
            continue
        name = title
        if sid == "36":
            parse_counters(name, body, spec)
            continue
        mm = re.match(r"\s*\([^)]*\)(?: \([^)]*\))?:\s*`([^`]*)`", body, re.S)
        if not mm:
            fail(f"S{sid} {name}: no member list after the page citation")
        spec.structs[name] = Struct(name, parse_member_list(mm.group(1), f"S{sid} {name}"),
                                    f"INVENTORY §3 S{sid}")
    for need in [f"{i:02d}" for i in range(1, 8)] + ["07a"] + [str(i) for i in range(28, 38)]:
        if need not in seen:
            fail(f"§3: S{need} not found")

    # 3.B object structures and 3.C dispatch tables are cross-checked against §1.
    sb = section(s3, r"^### 3\.B ", r"^### 3\.C", "§3.B")
    objs = re.findall(r"S(\d+)\s+(NDK_\w+)\s+\(", sb)
    if len(objs) != 10:
        fail(f"§3.B lists {len(objs)} object structures, expected 10")
    tmpl = one(r"\(all `\{(.*?)\}`\)", sb, "§3.B template").group(1)
    for _, o in objs:
        if o not in spec.structs or spec.structs[o].kind != "object":
            fail(f"§3.B object {o} is not an object of §1")
        want = parse_member_list(tmpl.replace("<T>", o), f"§3.B {o}")
        got = spec.structs[o].members
        if [(m.type, m.name) for m in want] != [(m.type, m.name) for m in got]:
            fail(f"§3.B template for {o} differs from §1")
    sc = section(s3, r"^### 3\.C ", r"^### 3\.D", "§3.C")
    disp = re.findall(r"S(\d+)\s+(NDK_\w+_DISPATCH)\s+\((\d+),", sc)
    if len(disp) != 10:
        fail(f"§3.C lists {len(disp)} dispatch tables, expected 10")
    for _, d, n in disp:
        if d not in spec.structs or len(spec.structs[d].members) != int(n):
            fail(f"§3.C: {d} has {n} members, §1 disagrees")

    # 3.F: NDK_VERSION and NDK_ADAPTER_INFO (cross-checked with NOTES.md).
    sf = section(s3, r"^### 3\.F ", r"^## |\Z", "§3.F")
    vm = one(r"\*\*NDK_VERSION\*\*.*?layout \[H\] `([^`]*)`", sf, "§3.F NDK_VERSION", re.S)
    spec.structs["NDK_VERSION"] = Struct("NDK_VERSION", parse_member_list(vm.group(1), "NDK_VERSION"),
                                         "INVENTORY §3.F")
    nvm = one(r"^## NDK_VERSION\s*\n`\{([^}]*)\}`", notes, "NOTES NDK_VERSION", re.M)
    if [(m.type, m.name) for m in parse_member_list(nvm.group(1), "NOTES NDK_VERSION")] != \
            [(m.type, m.name) for m in spec.structs["NDK_VERSION"].members]:
        fail("NDK_VERSION differs between INVENTORY §3.F and NOTES.md")
    am = one(r"\*\*NDK_ADAPTER_INFO\*\*.*?layout \[H\] \([^)]*\):\s*`([^`]*)`", sf, "§3.F NDK_ADAPTER_INFO", re.S)
    inv_ai = parse_member_list(am.group(1), "INVENTORY NDK_ADAPTER_INFO")
    nm = one(r"^## NDK_ADAPTER_INFO \(likely; (\d+) bytes[^)]*\)\s*\nIn this order: `([^`]*)`",
             notes, "NOTES NDK_ADAPTER_INFO", re.M)
    notes_ai = parse_member_list(nm.group(2), "NOTES NDK_ADAPTER_INFO")
    if [(m.type, m.name) for m in inv_ai] != [(m.type, m.name) for m in notes_ai]:
        fail("NDK_ADAPTER_INFO differs between INVENTORY §3.F and NOTES.md")
    spec.structs["NDK_ADAPTER_INFO"] = Struct("NDK_ADAPTER_INFO", inv_ai, "INVENTORY §3.F, NOTES.md")
    KNOWN_SIZES["NDK_ADAPTER_INFO"] = (int(nm.group(1)), 8)

    # NDIS_OBJECT_HEADER: §6.3 names the members; the Windows shape is fixed above.
    hm = one(r"`NDIS_OBJECT_HEADER` \(([\w/]+)\)", inv, "§6.3 NDIS_OBJECT_HEADER")
    if hm.group(1).split("/") != [n for _, n in NDIS_OBJECT_HEADER_MEMBERS]:
        fail(f"NDIS_OBJECT_HEADER members {hm.group(1)} differ from the known shape")
    spec.structs["NDIS_OBJECT_HEADER"] = Struct(
        "NDIS_OBJECT_HEADER", [Member(t, n) for t, n in NDIS_OBJECT_HEADER_MEMBERS],
        "INVENTORY §6.3 (names), Windows widths")


def parse_counters(name: str, body: str, spec: Spec) -> None:
    m = one(r"(\d+) × `(\w+)`, in order \(counter index\):(.*)", body, f"{name} header", re.S)
    total, ctype, text = int(m.group(1)), m.group(2), m.group(3)
    slots: dict[int, str] = {}
    rm = one(r"Reserved(\d+)\.\.Reserved(\d+) = (\d+)\.\.(\d+)", text, f"{name} reserved range")
    a, b, ia, ib = (int(x) for x in rm.groups())
    if b - a != ib - ia:
        fail(f"{name}: reserved range {rm.group(0)} is inconsistent")
    for k in range(b - a + 1):
        slots[ia + k] = f"Reserved{a + k:02d}"
    for cm in re.finditer(r"(?:^|·)\s*([A-Z]\w*) (\d+)\b", text, re.M):
        idx = int(cm.group(2))
        if idx in slots:
            fail(f"{name}: counter index {idx} given twice")
        slots[idx] = cm.group(1)
    if sorted(slots) != list(range(total)):
        fail(f"{name}: counter indices {sorted(slots)} are not 0..{total - 1}")
    spec.structs[name] = Struct(name, [Member(ctype, slots[i]) for i in range(total)],
                                "INVENTORY §3 S36")


# ----------------------------------------------------------------- §4 values --
def parse_values(inv: str, notes: str, spec: Spec, objtypes: dict[str, int]) -> None:
    s4 = section(inv, r"^## 4\. Enums", r"^## 5\.", "INVENTORY §4")

    e1 = section(s4, r"^### E1 NDK_OBJECT_TYPE", r"^### ", "E1")
    ot = [(n, int(v)) for n, v in re.findall(r"`(NdkObjectType\w+)`=(\d+)", e1)]
    if len(ot) != 12:
        fail(f"E1: {len(ot)} NDK_OBJECT_TYPE values, expected 12")
    for n, v in ot:
        if objtypes.get(n) != v:
            fail(f"E1 {n}={v} disagrees with §1 ({objtypes.get(n)})")
    spec.enums["NDK_OBJECT_TYPE"] = ot

    e2 = section(s4, r"^### E2 NDK_OPERATION_TYPE", r"^### ", "E2")
    op = [(n, int(v)) for n, v in re.findall(r"`(NdkOperationType\w+)`=(\d+)", e2)]
    if len(op) != 8:
        fail(f"E2: {len(op)} NDK_OPERATION_TYPE values, expected 8")
    hexnote = one(r"`NdkOperationTypeReceiveAndInvalidate`=\d+ \((0x[0-9A-Fa-f]+)\)", e2, "E2 hex")
    if int(hexnote.group(1), 16) != dict(op)["NdkOperationTypeReceiveAndInvalidate"]:
        fail("E2: decimal and hex value of ReceiveAndInvalidate differ")
    spec.enums["NDK_OPERATION_TYPE"] = op

    e3 = section(s4, r"^### E3 NDK_OP_FLAG_", r"^### ", "E3")
    rows = re.findall(r"^\| (NDK_OP_FLAG_\w+) \| ([^|]*) \|", e3, re.M)
    if len(rows) != 10:
        fail(f"E3: {len(rows)} NDK_OP_FLAG_* rows, expected 10")
    for n, cell in rows:
        use = re.search(r"use (0x[0-9A-Fa-f]+)", cell)
        if use:
            v = int(use.group(1), 16)
        else:
            hexes = re.findall(r"0x[0-9A-Fa-f]+", cell)
            if len(hexes) != 1:
                fail(f"E3 {n}: cannot pick one value from {cell!r}")
            v = int(hexes[0], 16)
        spec.values.append((n, v, "NDK_OP_FLAG_* (INVENTORY E3)"))

    e4 = section(s4, r"^### E4 NDK_MR_FLAG_", r"^### ", "E4")
    mr = re.findall(r"`(NDK_MR_FLAG_\w+)`=(0x[0-9A-Fa-f]+)", e4)
    if len(mr) != 5:
        fail(f"E4: {len(mr)} NDK_MR_FLAG_* values, expected 5")
    spec.values += [(n, int(v, 16), "NDK_MR_FLAG_* (INVENTORY E4)") for n, v in mr]

    e5 = section(s4, r"^### E5 NDK_CQ_NOTIFY_", r"^### ", "E5")
    cq = re.findall(r"`(NDK_CQ_NOTIFY_\w+)`=(\d+)", e5)
    if len(cq) != 3:
        fail(f"E5: {len(cq)} NDK_CQ_NOTIFY_* values, expected 3")
    spec.values += [(n, int(v), "NDK_CQ_NOTIFY_* (INVENTORY E5)") for n, v in cq]

    # Adapter flags: NOTES.md list, cross-checked with INVENTORY §6.1.
    fm = one(r"^Adapter flags \([^)]*\):\s*\n(.*?)\(all `NDK_ADAPTER_FLAG_\*`\)", notes,
             "NOTES adapter flags", re.M | re.S)
    flags = {f"NDK_ADAPTER_FLAG_{n}": int(v, 16)
             for n, v in re.findall(r"([A-Z][A-Z_]+) (0x[0-9A-Fa-f]+)", fm.group(1))}
    if len(flags) != 7:
        fail(f"NOTES: {len(flags)} adapter flags, expected 7")
    s61 = section(inv, r"^### 6\.1 ", r"^### 6\.2", "INVENTORY §6.1")
    fl = one(r"\*\*NDK_ADAPTER_FLAG_\*\*\* values — (.*?)\(`NOTES\.md`\)", s61, "§6.1 flags", re.S).group(1)
    inv_flags = re.findall(r"`(\w+)`\s*\((0x[0-9A-Fa-f]+) \[H\]\)", fl) + \
        re.findall(r"(?<![`\w])([A-Z][A-Z_]+_SUPPORTED) (0x[0-9A-Fa-f]+)", fl)
    if len(inv_flags) != 7:
        fail(f"§6.1: {len(inv_flags)} adapter flags parsed, expected 7")
    for n, v in inv_flags:
        if flags.get(f"NDK_ADAPTER_FLAG_{n}") != int(v, 16):
            fail(f"adapter flag {n}: INVENTORY {v} vs NOTES {flags.get('NDK_ADAPTER_FLAG_' + n)}")
    e7 = section(s4, r"^### E7 NDK_ADAPTER_FLAG_", r"^### ", "E7")
    for n in re.findall(r"`(NDK_ADAPTER_FLAG_\w+)`", e7):
        if n not in flags:
            fail(f"E7 names {n} but no value is given")
    spec.values += [(n, v, "NDK_ADAPTER_FLAG_* (NOTES.md, INVENTORY §6.1)") for n, v in flags.items()]

    # NDK_RDMA_TECHNOLOGY: NOTES.md, extended/cross-checked by INVENTORY §6.1.
    tm = one(r"`NDK_RDMA_TECHNOLOGY` \(likely\): (.*?)\.\s*$", notes, "NOTES NDK_RDMA_TECHNOLOGY", re.M)
    tech = [(n, int(v)) for n, v in re.findall(r"(Ndk\w+) (\d+)", tm.group(1))]
    im = one(r"\*\*NDK_RDMA_TECHNOLOGY\*\*.*?\[H\] (.*?)\.\s*$", s61, "§6.1 NDK_RDMA_TECHNOLOGY", re.M | re.S)
    itech = [(n, int(v)) for n, v in re.findall(r"(Ndk\w+) (\d+)", im.group(1))]
    if itech[: len(tech)] != tech:
        fail(f"NDK_RDMA_TECHNOLOGY: NOTES {tech} vs INVENTORY {itech}")
    spec.enums["NDK_RDMA_TECHNOLOGY"] = itech
    e11 = one(r"`\*NetworkDirectTechnology`: enum, (.*?)\(ids of `NDK_RDMA_TECHNOLOGY`", inv, "E11 technology ids", re.S)
    for v, label in re.findall(r"(\d+) (\w+)", e11.group(1)):
        hit = [n for n, nv in itech if nv == int(v)]
        if not hit or hit[0].lower() != "ndk" + label.lower():
            fail(f"E11 technology id {v} {label} does not match {itech}")

    # NTSTATUS / NDIS_STATUS: NOTES.md table plus INVENTORY §6.2; conflicts are errors.
    st: dict[str, int] = {}

    def add_status(n: str, v: int, src: str) -> None:
        if n in st and st[n] != v:
            fail(f"{n}: {src} gives {v:#x}, another source {st[n]:#x}")
        st[n] = v
    tbl = section(notes, r"^## NTSTATUS values", r"^## ", "NOTES NTSTATUS table")
    for a, b in re.findall(r"^\| ([A-Z_ /]+?) \| ([^|]+?) \|\s*$", tbl, re.M):
        if a == "name":
            continue
        if "/" in a:  # 'NDIS_STATUS_SUCCESS / _PENDING / _RESOURCES' | 'same as STATUS_SUCCESS / ...'
            lhs = [x.strip() for x in a.split("/")]
            rm = re.fullmatch(r"same as (.*)", b.strip())
            if not rm:
                fail(f"NOTES: cannot read row {a} | {b}")
            rhs = [x.strip() for x in rm.group(1).split("/")]
            if len(lhs) != len(rhs):
                fail(f"NOTES: row {a} | {b} has unequal lists")
            lp = lhs[0][: lhs[0].index("_SUCCESS")]
            rp = rhs[0][: rhs[0].index("_SUCCESS")]
            for l, r in zip(lhs, rhs):
                l = l if not l.startswith("_") else lp + l
                r = r if not r.startswith("_") else rp + r
                if r not in st:
                    fail(f"NOTES: {l} = {r}, but {r} has no value above it")
                add_status(l, st[r], "NOTES.md")
            continue
        add_status(a.strip(), parse_int(b), "NOTES.md")
    s62 = section(inv, r"^### 6\.2 ", r"^### 6\.3", "INVENTORY §6.2")
    for n, v in re.findall(r"`((?:NDIS_)?STATUS_\w+)`(?: = \w+)? (0x[0-9A-Fa-f]+|\d+)", s62):
        add_status(n, parse_int(v), "INVENTORY §6.2")
    e12 = section(s4, r"^### E12 ", r"^## ", "E12")
    sm = one(r"STATUS_: (.*?) \((\d+)\)\. NDIS_STATUS_: (.*?) \((\d+);", e12, "E12 lists", re.S)
    named = ["STATUS_" + x.strip() for x in sm.group(1).split(",")]
    named_ndis = ["NDIS_STATUS_" + x.strip() for x in sm.group(3).split(",")]
    if len(named) != int(sm.group(2)) or len(named_ndis) != int(sm.group(4)):
        fail("E12: status list lengths differ from their stated counts")
    for n in named + named_ndis:
        if n not in st:
            fail(f"E12 names {n} but neither NOTES.md nor §6.2 gives its value")
    spec.statuses = st

    # OIDs and NDIS revisions (§6.3).
    s63 = section(inv, r"^### 6\.3 ", r"^### 6\.4", "INVENTORY §6.3")
    oids = re.findall(r"`(OID_NDK_\w+)` (0x[0-9A-Fa-f]+)", s63)
    e10 = section(s4, r"^### E10 ", r"^### ", "E10")
    e10_oids = re.findall(r"`(OID_NDK_\w+)`", e10)
    if sorted(n for n, _ in oids) != sorted(e10_oids) or len(oids) != 4:
        fail(f"OIDs: §6.3 {oids} vs E10 {e10_oids}")
    spec.values += [(n, int(v, 16), "OID_NDK_* (INVENTORY §6.3)") for n, v in oids]
    rv = one(r"revisions (.*?)\(all (\d+) \[H\]\)", s63, "§6.3 revisions", re.S)
    revs = re.findall(r"`(NDIS_\w+_REVISION_1)`", rv.group(1))
    if len(revs) != 6:
        fail(f"§6.3: {len(revs)} *_REVISION_1 names, expected 6")
    spec.values += [(n, int(rv.group(2)), "*_REVISION_1 (INVENTORY §6.3)") for n in revs]

    # Names the specification gives without a value: existence only.
    for n in re.findall(r"`(NDIS_OBJECT_TYPE_\w+)`", s63):
        if n not in [x for x, _ in spec.names_only]:
            spec.names_only.append((n, "INVENTORY §6.3 names it; no value in the specification"))
    for n in re.findall(r"`(NetEventNDK\w+)`", e10):
        spec.names_only.append((n, "INVENTORY E10 names it; no value in the specification"))

    # NDIS_SIZEOF_* macros (§6.3): [D] a revision-1 size covers the structure through its
    # last member; the (n) forms size a buffer holding n array entries.
    sz = one(r"size macros (.*?)\.\s*$", s63, "§6.3 size macros", re.M | re.S).group(1)
    for mac, arg in re.findall(r"`(NDIS_SIZEOF_\w+)(\(n\))?`", sz):
        owner = size_macro_owner(mac, spec)
        if arg:
            arr = spec.structs[owner].members[-1]
            if arr.count is None:
                fail(f"{mac}(n): {owner} does not end in an array")
            spec.size_macros_n.append((mac, owner, arr.name))
        else:
            spec.size_macros.append((mac, owner, spec.structs[owner].members[-1].name))


def size_macro_owner(mac: str, spec: Spec) -> str:
    stem = mac[len("NDIS_SIZEOF_"): -len("_REVISION_1")]
    for cand in ("NDIS_" + stem, "NDIS_" + stem.replace("NDK_ENDPOINTS", "NDK_LOCAL_ENDPOINTS")):
        if cand in spec.structs:
            return cand
    fail(f"{mac}: no structure of that name in the specification")
    return ""


def check_widths_against_notes(notes: str) -> None:
    """NOTES.md states the widths in prose ('`ULONG`/`LONG`/`NTSTATUS` are 32 bits; ...');
    every width it states must agree with WIDTHS."""
    m = one(r"^## Windows base types on Linux[^\n]*\n(.*?)(?=^## )", notes, "NOTES widths", re.M | re.S)
    t = m.group(1).replace("`/`", "/")
    seen = set()
    for group, bits in re.findall(r"`([\w/]+)`(?: are| is)? (\d+)", t):
        for n in group.split("/"):
            if n not in WIDTHS:
                fail(f"NOTES gives a width for {n}, which the width table lacks")
            if WIDTHS[n][0] * 8 != int(bits):
                fail(f"NOTES says {n} is {bits} bits, the width table says {WIDTHS[n][0] * 8}")
            seen.add(n)
    need = {"ULONG", "LONG", "NTSTATUS", "ULONG64", "SIZE_T", "ULONG_PTR", "USHORT", "BOOLEAN"}
    if not need <= seen:
        fail(f"NOTES widths: could not read {sorted(need - seen)}")


# --------------------------------------------------------------------- layout --
class Layout:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.cache: dict[str, tuple[int, int, list[tuple[Member, int]]]] = {}
        self.typedef = dict(spec.typedefs)
        self.enums = set(spec.enums)
        self.fn = set(spec.fns)

    def base(self, t: str) -> tuple[int, int]:
        t = t.strip()
        if t.endswith("*"):
            return POINTER
        words = t.split()
        if words[0] == "CONST":
            words = words[1:]
        if len(words) != 1:
            fail(f"cannot size type {t!r}")
        w = words[0]
        if w in WIDTHS:
            return WIDTHS[w]
        if w in self.typedef:
            return self.base(self.typedef[w])
        if w in self.enums:
            return ENUM_SIZE
        if w in self.fn:
            return POINTER
        if w in self.spec.structs:
            size, align, _ = self.struct(w)
            return size, align
        if w.startswith("P") and w[1:] in self.spec.structs:
            return POINTER  # PNDIS_NDK_CAPABILITIES and the like
        fail(f"no width known for type {t!r}")
        return (0, 0)

    def struct(self, name: str) -> tuple[int, int, list[tuple[Member, int]]]:
        if name in self.cache:
            return self.cache[name]
        st = self.spec.structs[name]
        off, align, out = 0, 1, []
        i = 0
        ms = st.members
        while i < len(ms):
            m = ms[i]
            if m.union_group is not None:
                grp = [x for x in ms[i:] if x.union_group == m.union_group]
                usize = max(self.base(x.type)[0] * (x.count or 1) for x in grp)
                ualign = max(self.base(x.type)[1] for x in grp)
                usize = (usize + ualign - 1) // ualign * ualign
                off = (off + ualign - 1) // ualign * ualign
                for x in grp:
                    out.append((x, off))
                off += usize
                align = max(align, ualign)
                i += len(grp)
                continue
            s, a = self.base(m.type)
            off = (off + a - 1) // a * a
            out.append((m, off))
            off += s * (m.count or 1)
            align = max(align, a)
            i += 1
        size = (off + align - 1) // align * align
        self.cache[name] = (size, align, out)
        return self.cache[name]


# --------------------------------------------------------------------- output --
ORDER = [
    "NDK_VERSION", "NDK_OBJECT_HEADER_RESERVED_BLOCK", "NDK_OBJECT_HEADER", "NDK_SGE", "NDK_RESULT",
    "NDK_RESULT_EX", "NDK_EXTENSION_INTERFACE", "NDK_LOGICAL_ADDRESS_MAPPING", "NDK_ADAPTER_INFO",
]


def render(spec: Spec, sources: list[str]) -> str:
    lay = Layout(spec)
    for name, (size, align) in KNOWN_SIZES.items():
        got = lay.struct(name)[:2]
        if got != (size, align):
            fail(f"{name}: derived size/alignment {got}, expected {(size, align)}")
    for d in (s for s in spec.structs.values() if s.kind == "dispatch"):
        if lay.struct(d.name)[0] != 8 * len(d.members):
            fail(f"{d.name}: not 8 bytes per member")

    L: list[str] = []
    w = L.append
    w("/* expected_layout.inc -- GENERATED by tests/header/derive_expectations.py from the")
    w(" * specification (" + ", ".join(sources) + "). Do not edit: change the")
    w(" * specification and re-run the script. Every line is an expectation the header must meet.")
    w(" *")
    w(" * X-macros (the includer defines those it uses; the others expand to nothing):")
    w(" *   EXPECT_STRUCT_SIZE(T, size)            sizeof(T)")
    w(" *   EXPECT_STRUCT_ALIGN(T, align)          _Alignof(T)")
    w(" *   EXPECT_MEMBER(T, M, offset, TYPE)      offsetof(T, M) and the declared type of M")
    w(" *   EXPECT_ARRAY_MEMBER(T, M, offset, ELEM, N)   M is ELEM[N]")
    w(" *   EXPECT_FN_MEMBER(T, M, offset, FNTYPE) M is a function pointer of type FNTYPE")
    w(" *                                          (dispatch entries, NDIS handlers)")
    w(" *   EXPECT_TYPEDEF(T, SAME_AS)             T and SAME_AS are the same type")
    w(" *   EXPECT_TYPE_SIZE(T, size)              size of a scalar/enum type")
    w(" *   EXPECT_ENUM(ENUMTYPE, NAME, value)     enumerator of ENUMTYPE")
    w(" *   EXPECT_STATUS(NAME, value)             NTSTATUS code (32-bit pattern), of type NTSTATUS")
    w(" *   EXPECT_NDIS_STATUS(NAME, value)        NDIS_STATUS code (32-bit pattern), of type NDIS_STATUS")
    w(" *   EXPECT_VALUE(NAME, value)              other integer constant")
    w(" *   EXPECT_SIZE_MACRO(MACRO, T, LAST)      MACRO == offsetof(T, LAST) + sizeof(LAST) [D]")
    w(" *   EXPECT_SIZE_MACRO_N(MACRO, T, ARRAY)   MACRO(n) == offsetof(T, ARRAY) + n*sizeof(ARRAY[0]) [D]")
    w(" *   EXPECT_DEFINED(NAME)                   integer constant the spec names without a value")
    w(" *   EXPECT_FN(FNTYPE, RET, (PARAM TYPES), (PARAM DECLS))   function pointer typedef")
    w(" */")
    macros = ["EXPECT_STRUCT_SIZE", "EXPECT_STRUCT_ALIGN", "EXPECT_MEMBER", "EXPECT_ARRAY_MEMBER",
              "EXPECT_FN_MEMBER", "EXPECT_TYPEDEF", "EXPECT_TYPE_SIZE", "EXPECT_ENUM", "EXPECT_STATUS", "EXPECT_NDIS_STATUS",
              "EXPECT_VALUE", "EXPECT_SIZE_MACRO", "EXPECT_SIZE_MACRO_N", "EXPECT_DEFINED", "EXPECT_FN"]
    for m in macros:
        w(f"#ifndef {m}\n#define {m}(...)\n#define SOFTNDK_UNDEF_{m}\n#endif")
    w("")

    # Function types first so that an includer can define stubs before using them.
    w("/* ---- function types (INVENTORY §2, F01-F63) ---- */")
    for f in sorted(spec.fns.values(), key=lambda f: f.fid):
        types = ", ".join(t for t, _ in f.params)
        decls = ", ".join(f"{t}{'' if t.endswith('*') else ' '}{n}" for t, n in f.params)
        w(f"/* F{f.fid:02d} */ EXPECT_FN({f.name}, {f.ret}, ({types}), ({decls}))")
    w("")

    w("/* ---- scalar types ---- */")
    for t in ["UCHAR", "BOOLEAN", "USHORT", "ULONG", "LONG", "NTSTATUS", "UINT32", "ULONG64",
              "UINT64", "SIZE_T", "ULONG_PTR", "PVOID", "PHYSICAL_ADDRESS", "NDIS_STATUS"]:
        w(f"EXPECT_TYPE_SIZE({t}, {WIDTHS[t][0]})")
    for e in spec.enums:
        w(f"EXPECT_TYPE_SIZE({e}, {ENUM_SIZE[0]})")
    for t, same in spec.typedefs:
        w(f"EXPECT_TYPEDEF({t}, {same})")
        w(f"EXPECT_TYPE_SIZE({t}, {lay.base(same)[0]})")
    for t in ["GUID", "SOCKADDR_INET"]:
        w(f"EXPECT_TYPE_SIZE({t}, {WIDTHS[t][0]})")
    w("")

    names = list(ORDER)
    names += [s.name for s in spec.structs.values() if s.kind == "object"]
    names += [s.name for s in spec.structs.values() if s.kind == "dispatch"]
    names += ["NDIS_OBJECT_HEADER"]
    names += [n for n in spec.structs if n.startswith("NDIS_") and n not in names]
    if sorted(names) != sorted(spec.structs) or len(set(names)) != len(names):
        fail(f"structure ordering lost some: {sorted(set(spec.structs) ^ set(names))}")
    for n in names:
        st = spec.structs[n]
        size, align, offs = lay.struct(n)
        w(f"/* ---- {n} ({st.source}) ---- */")
        w(f"EXPECT_STRUCT_SIZE({n}, {size})")
        w(f"EXPECT_STRUCT_ALIGN({n}, {align})")
        for m, off in offs:
            if m.count is not None:
                w(f"EXPECT_ARRAY_MEMBER({n}, {m.name}, {off}, {m.type}, {m.count})")
            elif m.type in spec.fns:
                w(f"EXPECT_FN_MEMBER({n}, {m.name}, {off}, {m.type})")
            else:
                w(f"EXPECT_MEMBER({n}, {m.name}, {off}, {m.type})")
        w("")

    w("/* ---- enumerations ---- */")
    for e, vals in spec.enums.items():
        for name, v in vals:
            w(f"EXPECT_ENUM({e}, {name}, {v})")
    w("")
    w("/* ---- status codes (NOTES.md NTSTATUS table, INVENTORY §6.2) ---- */")
    for n, v in spec.statuses.items():
        kind = "EXPECT_NDIS_STATUS" if n.startswith("NDIS_STATUS_") else "EXPECT_STATUS"
        w(f"{kind}({n}, 0x{v:08X})")
    w("")
    group = None
    for n, v, g in spec.values:
        if g != group:
            w(f"/* ---- {g} ---- */")
            group = g
        w(f"EXPECT_VALUE({n}, 0x{v:08X})")
    w("")
    w("/* ---- NDIS_SIZEOF_* (INVENTORY §6.3; the formula is [D]) ---- */")
    for mac, owner, last in spec.size_macros:
        w(f"EXPECT_SIZE_MACRO({mac}, {owner}, {last})")
    for mac, owner, arr in spec.size_macros_n:
        w(f"EXPECT_SIZE_MACRO_N({mac}, {owner}, {arr})")
    w("")
    w("/* ---- named by the specification without a value ---- */")
    for n, why in spec.names_only:
        w(f"EXPECT_DEFINED({n}) /* {why} */")
    w("")
    for m in macros:
        w(f"#ifdef SOFTNDK_UNDEF_{m}\n#undef {m}\n#undef SOFTNDK_UNDEF_{m}\n#endif")
    return "\n".join(L) + "\n"


def count_lines(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in re.finditer(r"^(?:/\* F\d+ \*/ )?(EXPECT_\w+)\(", text, re.M):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_spec = os.environ.get("SOFTNDK_SPEC_DIR") or str(REPO.parent / "shared" / "spec")
    ap.add_argument("--spec", default=default_spec, help="directory holding INVENTORY.md and NOTES.md")
    ap.add_argument("--out", default=str(HERE / "expected_layout.inc"))
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()
    spec_dir = Path(args.spec)
    try:
        inv = (spec_dir / "INVENTORY.md").read_text(encoding="utf-8")
        notes = (spec_dir / "NOTES.md").read_text(encoding="utf-8")
    except OSError as e:
        print(f"derive_expectations: cannot read the specification: {e}", file=sys.stderr)
        return 2
    spec = Spec()
    try:
        check_widths_against_notes(notes)
        objtypes = parse_objects(inv, spec)
        parse_functions(inv, spec)
        parse_structures(inv, notes, spec)
        for s in spec.structs.values():
            for m in s.members:
                if m.type.startswith("NDK_FN_") and m.type not in spec.fns:
                    fail(f"{s.name}.{m.name}: {m.type} is not a function type of §2")
        parse_values(inv, notes, spec, objtypes)
        text = render(spec, ["INVENTORY.md", "NOTES.md"])
    except SpecError as e:
        print(f"derive_expectations: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    if args.check:
        old = out.read_text(encoding="utf-8") if out.exists() else ""
        if old != text:
            print(f"{out} is out of date; re-run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    out.write_text(text, encoding="utf-8")
    counts = count_lines(text)
    print(f"wrote {out}: {sum(counts.values())} expectations")
    for k in sorted(counts):
        print(f"  {k:22s} {counts[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

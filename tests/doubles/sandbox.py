"""Run a command under the syscall sandbox ``deploy/systemd/spendwatch.service`` asks systemd for.

There is no systemd (PID 1) in the test machine, so ``systemd-run -p ...`` cannot start the unit.
This launcher installs the same seccomp filters systemd 252 installs for the unit's settings, then
``exec``s the command:

* ``SystemCallFilter=@system-service`` + ``SystemCallFilter=~@privileged @resources`` with
  ``SystemCallErrorNumber=EPERM``: an allow-list resolved with ``systemd-analyze syscall-filter``
  (the host's own systemd, so the groups are exactly the ones it would enforce); anything else fails
  with EPERM; ``SystemCallArchitectures=native``: a foreign-ABI call kills the process;
* ``MemoryDenyWriteExecute=yes``: systemd 252's seccomp rules (no ``mmap`` with PROT_WRITE|PROT_EXEC,
  no ``mprotect``/``pkey_mprotect`` adding PROT_EXEC, no ``shmat`` with SHM_EXEC) plus the kernel's own
  ``PR_SET_MDWE`` (what newer systemd uses) where the kernel has it;
* ``NoNewPrivileges=yes`` (required to install a filter unprivileged, and set by the unit anyway).

Usage: ``python tests/doubles/sandbox.py [--no-syscall-filter] [--no-mdwe] -- COMMAND ...``.
x86_64 only (syscall numbers come from the kernel headers); ``supported()`` says whether it can run.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
AUDIT_ARCH_X86_64 = 0xC000003E
ALLOW_LIST = ("@system-service",)
DENY_LIST = ("@privileged", "@resources")  # the unit's SystemCallFilter=~@privileged @resources

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000

# classic BPF opcodes
LD_W_ABS = 0x20
JEQ_K = 0x15
JSET_K = 0x45
AND_K = 0x54
RET_K = 0x06
NR_OFFSET, ARCH_OFFSET = 0, 4


def supported() -> str | None:
    """None when the sandbox can run here, else why not."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return f"the sandbox launcher knows x86_64 Linux syscall numbers only (this is {platform.machine()})"
    if not UNISTD.is_file():
        return f"{UNISTD} (kernel headers) is missing"
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze is not installed (it resolves the @groups)"
    return None


@functools.cache
def syscall_numbers() -> dict[str, int]:
    text = UNISTD.read_text()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)", text)}


def resolve_group(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Every syscall name in a systemd syscall group, following nested @groups."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("@"):
            if item not in seen:
                names |= resolve_group(item, seen | {name})
        else:
            names.add(item)
    return names


def allowed_syscalls() -> list[int]:
    names: set[str] = set()
    for group in ALLOW_LIST:
        names |= resolve_group(group)
    for group in DENY_LIST:
        names -= resolve_group(group)
    numbers = syscall_numbers()
    return sorted(numbers[n] for n in names if n in numbers)  # the rest are other architectures' calls


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _arch_check() -> list[bytes]:
    return [
        _insn(LD_W_ABS, ARCH_OFFSET),
        _insn(JEQ_K, AUDIT_ARCH_X86_64, jt=1, jf=0),
        _insn(RET_K, SECCOMP_RET_KILL_PROCESS),
        _insn(LD_W_ABS, NR_OFFSET),
    ]


def allow_list_program(allowed: list[int]) -> list[bytes]:
    # x32 calls carry bit 30 in nr and so match nothing below: EPERM, as SystemCallArchitectures=native.
    program = _arch_check()
    for number in allowed:
        program += [_insn(JEQ_K, number, jt=0, jf=1), _insn(RET_K, SECCOMP_RET_ALLOW)]
    program.append(_insn(RET_K, SECCOMP_RET_ERRNO | EPERM))
    return program


def _arg_low(index: int) -> int:
    return 16 + 8 * index  # seccomp_data.args[index], low 32 bits on little-endian


def mdwe_program() -> list[bytes]:
    """systemd 252's ``seccomp_memory_deny_write_execute`` rules, for x86_64."""
    numbers = syscall_numbers()
    deny = _insn(RET_K, SECCOMP_RET_ERRNO | EPERM)
    allow = _insn(RET_K, SECCOMP_RET_ALLOW)
    program = _arch_check()
    # mmap: refuse PROT_WRITE and PROT_EXEC together
    program += [_insn(JEQ_K, numbers["mmap"], jt=0, jf=5), _insn(LD_W_ABS, _arg_low(2))]
    program += [_insn(AND_K, PROT_WRITE | PROT_EXEC), _insn(JEQ_K, PROT_WRITE | PROT_EXEC, jt=0, jf=1), deny, allow]
    # mprotect / pkey_mprotect: refuse PROT_EXEC
    for name in ("mprotect", "pkey_mprotect"):
        program += [_insn(JEQ_K, numbers[name], jt=0, jf=4), _insn(LD_W_ABS, _arg_low(2))]
        program += [_insn(JSET_K, PROT_EXEC, jt=0, jf=1), deny, allow]
    # shmat: refuse SHM_EXEC
    program += [_insn(JEQ_K, numbers["shmat"], jt=0, jf=4), _insn(LD_W_ABS, _arg_low(2))]
    program += [_insn(JSET_K, SHM_EXEC, jt=0, jf=1), deny, allow]
    program.append(allow)
    return program


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(program: list[bytes]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    code = b"".join(program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit("usage: sandbox.py [--no-syscall-filter] [--no-mdwe] -- COMMAND ...")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    reason = supported()
    if reason:
        raise SystemExit(f"sandbox: {reason}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    programs = []
    if "--no-syscall-filter" not in options:
        programs.append(allow_list_program(allowed_syscalls()))
    if "--no-mdwe" not in options:
        programs.append(mdwe_program())
        libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)  # kernels before 6.3 lack it: seccomp covers
    for program in programs:
        install(program)
    os.umask(0o077)  # UMask=0077
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Secrets written inline: on a command line, in a healthcheck's test, in a label.

Compose files often give a password on a command line (``redis-server --requirepass X``,
``mysqldump -pX``, ``--password=X``, ``PGPASSWORD=X pg_dump``, ``user:X@`` in a URL), in a healthcheck
(``redis-cli -a X ping``) or in a label. Left there it would be in the Deployment's args, its probes or
its annotations: readable by whoever may read the Deployment, and in every YAML shown. Once every rule
has run, :func:`move_inline_secrets` moves each one to the Secret ``<name>-env``, where the program can
still read it:

- the container's ``command``/``args``: the argument names it as ``$(VAR)``, which Kubernetes expands
  from the container's environment before the program starts;
- a healthcheck run by a shell (``CMD-SHELL``): the script reads ``${VAR}`` from the container's
  environment (Kubernetes expands nothing in a probe's command);
- a healthcheck run without a shell (``CMD``): when its program reads the secret from a variable
  (:data:`READS_ENV`: ``redis-cli`` ``REDISCLI_AUTH``, the MySQL clients ``MYSQL_PWD``; a ``NAME=X``
  given to ``env`` is that variable), the flag goes and the variable comes from the Secret.

What cannot be moved so is refused, with the compose file's line and the fix: a ``CMD`` healthcheck
whose program reads no variable, a shell script that quotes the value where a variable cannot stand in
for it, and a label (an annotation cannot read a Secret). No report line, error or YAML shows a value.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from homelab_lib.convert.model import Build, pair_list
from homelab_lib.convert.secrets import SECRET_KEY, SECRET_VALUE
from homelab_lib.core.errors import ConvertError, Problem
from homelab_lib.kube.objects import KubeObject

SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "busybox"})
MYSQL = frozenset(
    {"mysql", "mysqldump", "mysqladmin", "mysqlcheck", "mysqlimport", "mysqlshow", "mysqlpump",
     "mariadb", "mariadb-dump", "mariadb-admin", "mariadb-check", "mariadb-import", "mariadb-show"}
)  # fmt: skip
#: program -> the variable it reads its password from, when none is given on its command line.
READS_ENV = {"redis-cli": "REDISCLI_AUTH", "valkey-cli": "REDISCLI_AUTH", **dict.fromkeys(MYSQL, "MYSQL_PWD")}
#: A flag whose value is a secret: its last word is one of these (``--requirepass``, ``--db-password``).
SECRET_FLAG = re.compile(
    r"^--?(?:[a-z0-9]+[-_.])*(?:pass|password|passwd|pwd|secret|token|api[-_]?key|requirepass|masterauth|"
    r"credentials?)$",
    re.I,
)
#: A label (an annotation once converted) that holds a secret: named like one, or holding a credential.
SECRET_LABEL = re.compile(
    r"(^|[-_./])(pass(word|wd)?|secret|token|api[-_]?key|private[-_]?key|credentials?)($|[-_./])", re.I
)
_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.S)
_URL = re.compile(r"://[^/\s:@]*:([^/\s@]+)@")
_KEYED = re.compile(r"(?:pass(?:word|wd)?|secret|token)['\"\]]*\s*(?:=|:|=>)\s*([^\s'\",;&]+)", re.I)
_UNSAFE_IN_SHELL = set(" \t\n'\"\\$`*?[]~{}")  # a value with none of these reads the same as "${VAR}"
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "(", ")", ";;", "|&"})


@dataclass(frozen=True)
class Inline:
    """One secret found in an argument list.

    Attributes:
        value: the secret (never shown).
        how: how it is given, for messages: ``after --requirepass``, ``-p<password>``, ``PGPASSWORD=``...
        name: the variable it is carried in when none carries it yet (``REQUIREPASS``, ``PGPASSWORD``).
        env: the variable the program reads it from when it is not given ('' when none).
        drop: the arguments that give it, dropped when the program reads ``env`` instead.
    """

    value: str
    how: str
    name: str = "PASSWORD"
    env: str = ""
    drop: tuple[int, ...] = ()


def _is_reference(value: str) -> bool:
    return not value or value.startswith("$")


def _program(argv: Sequence[str]) -> tuple[str, int]:
    """The program of a simple command (its basename) and its index, past ``NAME=X`` prefixes and ``env``."""
    i = 0
    while i < len(argv) and _ASSIGN.fullmatch(argv[i]):
        i += 1
    if i < len(argv) and posixpath.basename(argv[i]) == "env":
        i += 1
        while i < len(argv) and (argv[i].startswith("-") or _ASSIGN.fullmatch(argv[i])):
            i += 1
    return (posixpath.basename(argv[i]), i) if i < len(argv) else ("", len(argv))


def _one(argv: Sequence[str], i: int, program: str, start: int) -> Inline | None:
    """The secret argv[i] gives, if any (its value may be argv[i + 1])."""
    arg = argv[i]
    assign = _ASSIGN.fullmatch(arg)
    if assign and i < start and SECRET_KEY.search(assign.group(1)) and not assign.group(1).endswith("_FILE"):
        name = assign.group(1)
        return Inline(assign.group(2), f"{name}=", name, name, (i,))
    env = READS_ENV.get(program, "")
    if program in MYSQL and arg.startswith("-p") and len(arg) > 2 and not arg.startswith("--"):
        return Inline(arg[2:], "-p<password>", env, env, (i,))
    if program in ("redis-cli", "valkey-cli") and arg == "-a" and i + 1 < len(argv):
        return Inline(argv[i + 1], "after -a", env, env, (i, i + 1))
    flag, eq, value = arg.partition("=")
    if SECRET_FLAG.match(flag):
        name = env or flag.lstrip("-")
        if eq:
            return Inline(value, f"{flag}=", name, env, (i,))
        if program not in MYSQL and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            return Inline(argv[i + 1], f"after {flag}", name, env, (i, i + 1))
        return None
    for pattern, how in ((_URL, "in a URL's user:password@"), (_KEYED, "as password=")):
        m = pattern.search(arg)
        if m:
            return Inline(m.group(1), how)
    return None


def find_in_argv(argv: Sequence[str]) -> list[Inline]:
    """Every secret an argument list gives (a value that is a reference, ``$NAME``, is none)."""
    program, start = _program(argv)
    found: list[Inline] = []
    taken: set[int] = set()
    for i in range(len(argv)):
        if i in taken:
            continue
        got = _one(argv, i, program, start)
        if got is not None and not _is_reference(got.value):
            found.append(got)
            taken.update(got.drop)
    return found


def _commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell script, as words (best effort: a script shlex cannot read is split)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:
        words = script.split()
    command: list[str] = []
    for word in words:
        if word in _SEPARATORS:
            if command:
                yield command
            command = []
        else:
            command.append(word)
    if command:
        yield command


def find_in_script(script: str) -> list[Inline]:
    """Every secret a shell script gives, command by command (``NAME=X`` prefixes included)."""
    return [found for command in _commands(script) for found in find_in_argv(command)]


def _script(argv: Sequence[str]) -> int:
    """The index of the script of ``sh -c SCRIPT`` (any shell; ``-c`` alone or among other flags), else -1."""
    if not argv or posixpath.basename(argv[0]) not in SHELLS:
        return -1
    for i, arg in enumerate(argv[1:-1], start=1):
        if re.fullmatch(r"-[a-z]*c[a-z]*", arg):
            return i + 1
    return -1


def find_all(argv: Sequence[str]) -> list[Inline]:
    """The secrets of an argument list, the script it hands a shell read command by command."""
    script = _script(argv)
    if script < 0:
        return find_in_argv(argv)
    return find_in_argv([*argv[:script], "", *argv[script + 1 :]]) + find_in_script(argv[script])


def _states(script: str) -> list[str]:
    """The quoting at each character of a shell script: ``""`` (none), ``'"'``, ``"'"``, or ``"\\"`` (escaped)."""
    states, state, escaped = [], "", False
    for ch in script:
        if escaped:
            states.append("\\")
            escaped = False
            continue
        states.append(state)
        if ch == "\\" and state != "'":
            escaped = True
        elif ch == "'" and state in ("", "'"):
            state = "" if state == "'" else "'"
        elif ch == '"' and state in ("", '"'):
            state = "" if state == '"' else '"'
    return states


def in_script(script: str, value: str, var: str) -> str | None:
    """The script with every occurrence of value read from ``$var`` instead; None when a variable cannot stand
    in for it there (in single quotes, escaped, or a value the shell would read otherwise unquoted)."""
    if not value or set(value) & _UNSAFE_IN_SHELL:
        return None
    states = _states(script)
    out, i = [], 0
    while True:
        j = script.find(value, i)
        if j < 0:
            break
        if states[j] == '"':
            out.append(script[i:j] + "${" + var + "}")
        elif states[j] == "":
            out.append(script[i:j] + '"${' + var + '}"')
        else:
            return None
        i = j + len(value)
    return "".join(out) + script[i:]


# ------------------------------------------------------------------ the move


def _to_secret(b: Build, value: str) -> None:
    """An environment value the ConfigMap holds that is a secret after all: to the Secret, its variable with it."""
    for k, v in list(b.config_data.items()):
        if v == value:
            b.secret_data[k] = b.config_data.pop(k)
            for entry in b.env:
                if entry["name"] == k:
                    entry["valueFrom"] = {"secretKeyRef": {"name": f"{b.k8s}-env", "key": k}}


def _taken(b: Build, name: str) -> bool:
    return name in b.secret_data or name in b.config_data or any(e["name"] == name for e in b.env)


def _env_name(b: Build, value: str, want: str) -> str:
    """The Secret key (and variable) that carries value: one that already does, else ``want`` (numbered if taken)."""
    _to_secret(b, value)
    for k, v in b.secret_data.items():
        if v == value:
            return k
    base = re.sub(r"[^A-Z0-9_]", "_", want.upper()).strip("_") or "PASSWORD"
    base = f"_{base}" if base[0].isdigit() else base
    name, n = base, 2
    while _taken(b, name):
        name, n = f"{base}_{n}", n + 1
    return name


def _exact_env(b: Build, value: str, name: str) -> bool:
    """Whether the variable name (the one a program reads) can carry value: free, or carrying it already."""
    _to_secret(b, value)
    return b.secret_data.get(name) == value or not _taken(b, name)


def _carry(b: Build, name: str, value: str) -> None:
    """The container gets variable name from the Secret ``<name>-env``."""
    b.secret_data[name] = value
    if not any(e["name"] == name for e in b.env):
        b.env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": f"{b.k8s}-env", "key": name}}})


def _problem(b: Build, key: str, loc: tuple[str | int, ...], message: str) -> Problem:
    compose = b.ctx.compose
    return Problem(compose.shown, compose.line(("services", b.name, *loc)), f"services.{b.name}.{key}", message)


def _command(b: Build, key: str, field: str) -> list[str]:
    """The container's command or args: each secret as ``$(VAR)`` (Kubernetes expands it from the environment)."""
    raw = b.svc[key]
    argv = [str(v) for v in raw] if isinstance(raw, list) else shlex.split(str(raw))
    found = find_all(argv)
    for f in found:
        name = _env_name(b, f.value, f.name)
        _carry(b, name, f.value)
        escaped = f.value.replace("$(", "$$(")  # as the rule wrote the argument
        b.container[field] = [part.replace(escaped, f"$({name})") for part in b.container.get(field, [])]
        where = f"the container's {field} name it as $({name}), which Kubernetes expands from its environment"
        b.note(key, "mapped", f"a secret given {f.how} moved to Secret {b.k8s}-env key {name}: {where}")
    return [f.value for f in found]


#: What a refused healthcheck should be instead (Compose's ``$$`` is a ``$`` the shell sees).
_AS_VARIABLE = (
    'write it as "$$NAME" in a CMD-SHELL test (["CMD-SHELL", "... \\"$$NAME\\" ..."]) with NAME set in '
    "environment: (the converter moves it to the Secret), or use a variable the program reads its password from"
)


def _probe(b: Build, problems: list[Problem]) -> list[str]:
    """A healthcheck's test: a shell reads ``${VAR}``; a program that reads a variable gets it; else refused."""
    probes = [p for p in ("readinessProbe", "livenessProbe", "startupProbe") if p in b.container]
    if not probes:
        return []
    command = list(b.container[probes[0]]["exec"]["command"])
    at = _script(command)  # CMD-SHELL's /bin/sh -c SCRIPT, or a CMD that runs a shell
    found = find_in_script(command[at]) if at >= 0 else find_in_argv(command)
    if not found:
        return []
    key, loc, program = "healthcheck.test", ("healthcheck", "test"), _program(command)[0] or "its program"
    notes = []
    if at >= 0:
        for f in found:
            name = _env_name(b, f.value, f.name)
            script = in_script(command[at], f.value, name)
            if script is None:
                why = f"a secret given {f.how} is quoted or written so that the shell cannot read it from a variable"
                problems.append(_problem(b, key, loc, f"{why} there; {_AS_VARIABLE}"))
                return []
            command[at] = script
            _carry(b, name, f.value)
            notes.append((f, name, f"the probe's shell reads it as ${{{name}}} from the container's environment"))
    else:
        for f in found:
            if not f.env or not _exact_env(b, f.value, f.env):
                why = f"a secret given {f.how} to {program} cannot stay in the probe (run without a shell, it gets"
                problems.append(_problem(b, key, loc, f"{why} no $(VAR) expansion); {_AS_VARIABLE}"))
                return []
        dropped = {i for f in found for i in f.drop}
        command = [arg for i, arg in enumerate(command) if i not in dropped]
        for f in found:
            _carry(b, f.env, f.value)
            notes.append((f, f.env, f"{program} reads it from {f.env}, set from the Secret"))
    for f, name, how in notes:
        b.note(key, "mapped", f"a secret given {f.how} moved to Secret {b.k8s}-env key {name}: {how}")
    for p in probes:
        b.container[p] = {**b.container[p], "exec": {"command": list(command)}}
    return [f.value for f in found]


#: Why a label that holds a secret is refused, and what to do.
_AS_ANNOTATION = (
    "it would be an annotation, which whoever may read the Deployment reads and which cannot come from a "
    "Secret: pass the value to the program in environment: (the converter moves it to the Secret), or remove it"
)


def _labels(b: Build, problems: list[Problem]) -> None:
    """Labels and annotations that would be annotations holding a secret: refused (no annotation reads a Secret)."""
    sources: list[tuple[str, tuple[str | int, ...], Any]] = [
        ("labels", ("labels",), b.svc.get("labels")),
        ("annotations", ("annotations",), b.svc.get("annotations")),
        ("deploy.labels", ("deploy", "labels"), (b.svc.get("deploy") or {}).get("labels")),
    ]
    for key, loc, value in sources:
        if value is None:
            continue
        pairs = pair_list(value)
        for i, (name, text) in enumerate(pairs):
            if name.startswith(("traefik.", "homelab.")) and key == "labels":
                continue  # the Ingress reads traefik's; homelab.* is dropped
            why = _label_secret(name, text or "")
            if why:
                at = (*loc, i) if isinstance(value, list) else (*loc, name)
                problems.append(_problem(b, f"{key}.{name}", at, f"{why}; {_AS_ANNOTATION}"))


def _label_secret(name: str, value: str) -> str:
    """Why a label's value is a secret ('' when it is not)."""
    if _is_reference(value) or value.startswith("/"):
        return ""
    if SECRET_LABEL.search(name):
        return "it is named like a secret and holds a value"
    if SECRET_VALUE.search(value):
        return "its value holds a credential"
    return ""


def move_inline_secrets(b: Build) -> list[str]:
    """Move every secret of the command, the healthcheck and the labels to the Secret, or refuse.

    Returns:
        The values moved (for :func:`left_in`, the last check over the assembled objects).

    Raises:
        ConvertError: a secret no variable can carry (a ``CMD`` healthcheck whose program reads none, a
            script that quotes it, a label); each problem names the compose file's line and the fix.
    """
    problems: list[Problem] = []
    moved: list[str] = []
    for key, field in (("entrypoint", "command"), ("command", "args")):
        if key in b.svc:
            moved += _command(b, key, field)
    moved += _probe(b, problems)
    _labels(b, problems)
    if problems:
        raise ConvertError(problems)
    return moved


def left_in(objects: Sequence[KubeObject], values: Sequence[str]) -> list[str]:
    """The objects other than Secrets whose text still holds one of values (``Kind name``), for a last check."""
    out = []
    for obj in objects:
        if obj.get("kind") != "Secret":
            text = json.dumps(obj)
            if any(v in text or json.dumps(v)[1:-1] in text for v in values):
                out.append(f"{obj['kind']} {obj['metadata']['name']}")
    return out


__all__ = ["READS_ENV", "SECRET_FLAG", "Inline", "find_all", "find_in_argv", "find_in_script", "in_script",
           "left_in", "move_inline_secrets"]  # fmt: skip

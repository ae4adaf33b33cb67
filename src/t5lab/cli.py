"""`t5lab` command line: one subcommand per recipe, generated from the recipe functions' typed signatures.

jsonargparse turns each function's signature and docstring into `--help`, `--config FILE` (YAML) and
`--field value` overrides. A `T5LabError` (a user mistake) and an argument of the wrong type print as one
line and exit with status 1 and 2. Only the chosen command's recipe module is imported, and recipe modules
import torch inside their functions, so `--help` never loads torch (the command list reads the recipes'
docstrings from source).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any

from t5lab.errors import T5LabError, describe_os_error

# command → the recipe function that runs it ("module:function").
COMMANDS = {
    "pretrain": "t5lab.recipes.pretrain:pretrain",
    "generate": "t5lab.recipes.generate:generate",
    "finetune": "t5lab.recipes.finetune:finetune",
    "evaluate": "t5lab.recipes.evaluate:evaluate",
    "bench": "t5lab.recipes.bench:bench",
    "pareto": "t5lab.recipes.pareto:pareto",
    "scale-study": "t5lab.recipes.scale_study:scale_study",
    "shapes": "t5lab.recipes.shapes:shapes",
    "suggest": "t5lab.recipes.suggest:suggest",
    "tokenizer": "t5lab.recipes.tokenizer:tokenizer",
}


def command(name: str) -> Callable[..., Any]:
    module, function = COMMANDS[name].split(":")
    return getattr(import_module(module), function)


def _summary(name: str) -> str:
    """The first line of a command's docstring, read from the recipe's source without importing it."""
    module, function = COMMANDS[name].split(":")
    spec = importlib.util.find_spec(module)
    source = spec.loader.get_source(module) if spec and spec.loader else None  # type: ignore[attr-defined]
    for node in ast.parse(source or "").body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return (ast.get_docstring(node) or "").split("\n")[0]
    return ""


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: t5lab COMMAND [--help] [--config FILE.yaml] [--flag value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {_summary(name)}" for name in COMMANDS]
    lines += ["", "`t5lab COMMAND --help` lists a command's flags."]
    return "\n".join(lines)


def _shell_style(argv: list[str], commands: dict[str, Callable]) -> list[str]:
    """Accept the usual shell forms jsonargparse does not: `--input-length` for `--input_length`, a bare
    `--flag` for a bool parameter (jsonargparse wants `--flag true`) and bare words for a recipe's list
    parameter `names`, `results` or `texts` (`t5lab shapes a b` means `--names+ a --names+ b`; a required one, which
    jsonargparse makes positional, gets one JSON list `["a", "b"]`), several words after any other list
    option (`--shapes a b` means `--shapes '["a", "b"]'`), and `--name value` for a required parameter,
    which jsonargparse only takes positionally (`t5lab finetune --task glue/rte --model M`)."""
    if not argv or argv[0] not in commands:
        return argv
    params = inspect.signature(commands[argv[0]]).parameters
    if "recipe" in params:
        argv = _recipe_as_config(argv)
    flags = {name for name, p in params.items() if p.annotation in (bool, "bool", "bool | None")}
    lists = {name for name, p in params.items() if str(p.annotation).startswith("list[")}
    words = next((name for name in ("names", "results", "texts") if name in params), None)
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n != words]
    out, rest, bare = argv[:1], argv[1:], []
    given: dict[str, str] = {}
    loose: list[int] = []  # positions in `out` of positional words
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            key = key.replace("-", "_")
            arg = "--" + key + eq + value
            if key in required and (eq or i + 1 < len(rest)):
                given[key] = value if eq else rest[i + 1]
                i += 1 if eq else 2
                continue
        if arg.startswith("--") and "=" not in arg:
            out.append(arg)
            if arg[2:] in flags:
                if i + 1 < len(rest) and rest[i + 1].lower() in ("true", "false"):
                    out.append(rest[i + 1])
                    i += 1
                else:
                    out.append("true")
            elif arg[2:] in lists and i + 1 < len(rest) and not rest[i + 1].startswith(("[", "-")):
                items = []
                while i + 1 < len(rest) and not rest[i + 1].startswith("-"):
                    items.append(rest[i + 1])
                    i += 1
                out.append(json.dumps(items))
            elif arg not in ("--help", "--print_config") and i + 1 < len(rest):
                out.append(rest[i + 1])
                i += 1
        elif words and (arg == "-" or not arg.startswith("-")):  # "-": standard input, for `generate`
            bare.append(arg)
        else:
            if not arg.startswith("-"):
                loose.append(len(out))
            out.append(arg)
        i += 1
    if given:
        words_in_order = [out[j] for j in loose]
        positional = [given[n] if n in given else words_in_order.pop(0) for n in required
                      if n in given or words_in_order]
        out = out[:1] + positional + [a for j, a in enumerate(out) if j and j not in loose] + words_in_order
    if not bare or words is None:
        return out
    if params[words].default is inspect.Parameter.empty:
        return out[:1] + [json.dumps(bare)] + out[1:]
    return out + [item for word in bare for item in (f"--{words}+", word)]


def _recipe_as_config(argv: list[str]) -> list[str]:
    """A command with a `recipe` (pretrain) has one config format, its recipe: `--config FILE` reads one as
    `--recipe FILE` does, and `--print_config` prints the resolved recipe (`--print_recipe`) rather than
    jsonargparse's flat list of flags, most of them "use the recipe's"."""
    out: list[str] = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if key in ("--print_config", "--print-config"):
            out += ["--print_recipe", "true"]
        elif key == "--config":
            out.append("--recipe" + eq + value)
        else:
            out.append(arg)
    return out


def _argument_error(message: str) -> str:
    """jsonargparse's report of a value that fits no accepted type (a multi-line union dump), as one line
    naming the flag, the value and the types it accepts."""
    key = re.search(r'Parser key "([^"]+)"', message)
    value = re.search(r"(?:Given value|Got value): (.*)", message)
    if not key:
        return message.strip().splitlines()[0]
    accepted = [t for t in re.findall(r"<class '([\w.]+)'>", message.split("Errors:")[0]) if t != "NoneType"]
    expected = {"float": "a number", "int": "a whole number", "bool": "true or false", "str": "text"}
    wanted = " or ".join(dict.fromkeys(expected.get(t, t) for t in accepted)) or "a valid value"
    given = f" {value.group(1).strip()!r}" if value else ""
    return f"--{key.group(1).replace('_', '-')}{given}: expected {wanted}"


def _formatter(takes_recipe: bool) -> type:
    """jsonargparse's help formatter showing flags as `--batch-size`, the one spelling the docs use (the
    parser takes both), and for a command with a recipe, `--config` as what it is there."""
    from jsonargparse import DefaultHelpFormatter

    class DashedFlags(DefaultHelpFormatter):
        def format_help(self) -> str:
            text = re.sub(r"--\w+", lambda m: m.group(0).replace("_", "-"), super().format_help())
            return text.replace("Path to a configuration file.", "A recipe file (as --recipe).") if takes_recipe \
                else text

    return DashedFlags


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] not in COMMANDS:
        print(f"t5lab: error: unknown command {args[0]!r} (expected one of {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    from jsonargparse import CLI, ArgumentError

    commands = {args[0]: command(args[0])}
    try:
        CLI(commands, args=_shell_style(args, commands), as_positional=True, prog="t5lab", exit_on_error=False,
            formatter_class=_formatter("recipe" in inspect.signature(commands[args[0]]).parameters))
    except ArgumentError as e:
        print(f"t5lab {args[0]}: error: {_argument_error(str(e))}", file=sys.stderr)
        return 2
    except T5LabError as e:
        print(f"t5lab: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permission denied, read-only, a file where a folder is expected
        print(f"t5lab: error: {describe_os_error('?', e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("t5lab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

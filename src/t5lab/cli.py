"""`t5lab` command line: one subcommand per recipe, generated from the recipe functions' typed signatures.

jsonargparse turns each function's signature and docstring into `--help`, `--config FILE` (YAML) and
`--field value` overrides. A `T5LabError` (a user mistake) prints as one line and exits with status 1.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable

from t5lab.errors import T5LabError


def _commands() -> dict[str, Callable]:
    # Imported here so that `t5lab --help` and an early argument error stay fast.
    from t5lab.recipes import (
        bench,
        evaluate,
        finetune,
        generate,
        pareto,
        pretrain,
        scale_study,
        shapes,
        suggest,
        tokenizer,
    )

    return {
        "pretrain": pretrain.pretrain,
        "generate": generate.generate,
        "finetune": finetune.finetune,
        "evaluate": evaluate.evaluate,
        "bench": bench.bench,
        "pareto": pareto.pareto,
        "scale-study": scale_study.scale_study,
        "shapes": shapes.shapes,
        "suggest": suggest.suggest,
        "tokenizer": tokenizer.tokenizer,
    }


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
    flags = {name for name, p in params.items() if p.annotation in (bool, "bool")}
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
    if not bare:
        return out
    if params[words].default is inspect.Parameter.empty:
        return out[:1] + [json.dumps(bare)] + out[1:]
    return out + [item for word in bare for item in (f"--{words}+", word)]


def main(argv: list[str] | None = None) -> int:
    from jsonargparse import CLI

    commands = _commands()
    args = sys.argv[1:] if argv is None else argv
    try:
        CLI(commands, args=_shell_style(args, commands), as_positional=True, prog="t5lab")
    except T5LabError as e:
        print(f"t5lab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("t5lab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

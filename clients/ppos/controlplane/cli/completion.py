"""Shell completion generated from the argparse tree, so it never drifts from the commands."""

from __future__ import annotations

import argparse
import shlex

from ppos.controlplane.cli.output import FORMATS


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...], out: dict[tuple[str, ...], list[str]]
) -> None:
    words: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            canonical = {choice.dest for choice in action._choices_actions}
            for name, child in action.choices.items():
                if name in canonical:  # aliases are walked, not offered
                    words.append(name)
                _walk(child, (*path, name), out)
        elif action.help is not argparse.SUPPRESS:  # old spellings are not offered
            words.extend(s for s in action.option_strings if s.startswith("--"))
    out[path] = sorted(set(words), key=lambda w: (w.startswith("-"), w))


def tree(parser: argparse.ArgumentParser) -> dict[tuple[str, ...], list[str]]:
    out: dict[tuple[str, ...], list[str]] = {}
    _walk(parser, (), out)
    return out


def bash_script(parser: argparse.ArgumentParser) -> str:
    paths = tree(parser)
    prog = parser.prog
    func = "_" + prog.replace("-", "_")
    cases = []
    for path, words in sorted(paths.items()):
        key = shlex.quote(" ".join(path))
        cases.append(f"    {key}) words={shlex.quote(' '.join(words))} ;;")
    valid = " | ".join(shlex.quote(" ".join(p)) for p in sorted(paths) if p)
    return f"""# {prog} completion for bash: source <({prog} completion bash)
{func}_valid() {{
  case "$1" in
    {valid}) return 0 ;;
  esac
  return 1
}}
{func}() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
  local path="" word words="" i
  case "$prev" in
    -o|--output) COMPREPLY=( $(compgen -W "{" ".join(FORMATS)}" -- "$cur") ); return 0 ;;
    --token-file|--ca-file|--cert-file|--key-file|--payload-out|--token-out|-f|--file)
      COMPREPLY=( $(compgen -f -- "$cur") ); return 0 ;;
  esac
  for ((i=1; i<COMP_CWORD; i++)); do
    word="${{COMP_WORDS[i]}}"
    [[ "$word" == -* ]] && continue
    if {func}_valid "${{path:+$path }}$word"; then path="${{path:+$path }}$word"; fi
  done
  case "$path" in
{chr(10).join(cases)}
  esac
  COMPREPLY=( $(compgen -W "$words" -- "$cur") )
  return 0
}}
complete -o default -F {func} {prog}
"""


def zsh_script(parser: argparse.ArgumentParser) -> str:
    return (
        f"# {parser.prog} completion for zsh: source <({parser.prog} completion zsh)\n"
        "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(parser)
    )

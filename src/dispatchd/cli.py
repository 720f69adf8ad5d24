"""The ``dispatchd`` command: serve, check-config, plugins."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence

from . import __version__, config, control, registry, service
from .errors import ConfigError, DispatchdError

log = logging.getLogger("dispatchd")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # watchfiles logs every change it sees at INFO; the reload itself is what operators need.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    code: int = args.func(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dispatchd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dispatchd {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the daemon")
    _config_option(serve)
    serve.set_defaults(func=_serve)

    check = commands.add_parser("check-config", help="validate a config file and exit")
    _config_option(check)
    check.set_defaults(func=_check_config)

    reload = commands.add_parser(
        "reload", help="ask the running daemon to reload its config file, and show the result"
    )
    _config_option(reload)
    reload.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    reload.set_defaults(func=_reload)

    dead = commands.add_parser("dead-letters", help="list, replay or purge dead letters")
    dead.add_argument("action", choices=["list", "replay", "purge"])
    dead.add_argument("--dispatcher", "-d", help="only this dispatcher (required for replay/purge)")
    dead.add_argument("--limit", type=int, default=100, help="list: at most this many")
    dead.add_argument("--after", type=int, default=0, help="list: start after this dead-letter id")
    _config_option(dead)
    dead.set_defaults(func=_dead_letters)

    plugins = commands.add_parser("plugins", help="list every discovered dispatcher")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(func=_plugins)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=config.default_path(),
        help="config file (default: $DISPATCHD_CONFIG or config/dispatchd.toml)",
    )


def _load(path: str) -> config.Config | None:
    try:
        return config.load(path)
    except ConfigError as exc:
        print(f"dispatchd: invalid config {exc.path}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    for problem in registry.check(cfg):
        log.warning("config: %s", problem)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(cfg.server.event_loop)) as runner:
            runner.run(service.run(cfg, args.config))
    except DispatchdError as exc:
        log.error("%s", exc)
        return 1
    return 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``server.event_loop``: ``None`` is asyncio's own loop."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def _check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    problems = registry.check(cfg)
    if problems:
        print(f"dispatchd: invalid config {args.config}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    enabled = ", ".join(cfg.dispatch.enabled) or "none"
    print(f"{args.config}: OK (enabled dispatchers: {enabled})")
    return 0


def _reload(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    try:
        status, body = asyncio.run(control.post_reload(cfg.server, args.timeout))
    except DispatchdError as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        error = body.get("error", {})
        print(f"dispatchd: reload rejected: {error.get('message', body)}", file=sys.stderr)
        for problem in error.get("details", []):
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2))
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    if args.action != "list" and not args.dispatcher:
        print(f"dispatchd: dead-letters {args.action} needs --dispatcher", file=sys.stderr)
        return 2
    params = {"dispatcher": args.dispatcher} if args.dispatcher else {}
    if args.action == "list":
        request = ("GET", "/v1/dead-letters", {**params, "limit": str(args.limit),
                                               "after": str(args.after)})
    elif args.action == "replay":
        request = ("POST", "/v1/dead-letters/replay", params)
    else:
        request = ("DELETE", "/v1/dead-letters", params)
    method, path, query = request
    try:
        status, body = asyncio.run(control.call(cfg.server, method, path, params=query))
    except DispatchdError as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"dispatchd: {body.get('error', {}).get('message', body)}", file=sys.stderr)
        return 1
    if args.action == "list":
        for letter in body["dead_letters"]:
            print(json.dumps(letter))
        print(f"{len(body['dead_letters'])} dead letters", file=sys.stderr)
    else:
        print(json.dumps(body))
    return 0


def _plugins(args: argparse.Namespace) -> int:
    infos = registry.inspect_all()
    if args.json:
        print(json.dumps([vars(info) for info in infos], indent=2))
        return 0
    rows = [("NAME", "ENTRY POINT", "DISTRIBUTION", "STATUS")]
    for info in infos:
        status = "loadable" if info.error is None else f"error: {info.error}"
        rows.append((info.name, info.value, info.distribution or "-", status))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        print("  ".join([*cells, row[3]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

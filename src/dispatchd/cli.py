"""The ``dispatchd`` command: run the daemon, check a config, and operate a running daemon."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from . import __version__, cli_events, config, logs, registry, validation
from .control import Client, ServerError, Settings, Target, locate, settings
from .errors import ConfigError, DispatchdError, Problem
from .tables import one_line as _one_line
from .tables import print_table as _print_table
from .timefmt import rfc3339

log = logging.getLogger("dispatchd")
T = TypeVar("T")

DESCRIPTION = """\
dispatchd is an event-dispatch daemon. Engines POST action-event records to it over HTTP;
it commits each one to a durable spool on disk, then delivers it to every enabled dispatcher
(Senlin's event table, a RabbitMQ exchange, or a plugin), each at its own pace, with retries
and dead letters.

Every command reads the config file given with -c, else $DISPATCHD_CONFIG, else
config/dispatchd.toml. The commands that talk to a running daemon find it through the lock
file of the spool that config names, and fall back to the config's [server] address."""
EPILOG = "Run 'dispatchd COMMAND --help' for the options of one command."
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
REQUEST_TIMEOUT = 10.0  # seconds for the quick calls (status, dead letters)
PROGRESS_EVERY = 2.0  # seconds between "still waiting" lines


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(_flag_level(args) or "INFO", "text")
    try:
        code: int = args.func(args)
    except ServerError as exc:
        _print_server_error(exc)
        return 1
    except ConfigError as exc:
        _print_problems(exc.path, exc.problems)
        return 1
    except DispatchdError as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return 1
    return code


def _flag_level(args: argparse.Namespace) -> str | None:
    level: str | None = getattr(args, "log_level", None)
    return level


# -- the parser --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="dispatchd", description=DESCRIPTION, epilog=EPILOG, parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"dispatchd {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                     required=True)

    def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=description, parents=[common])

    _add_serve(add)
    _add_check_config(add)
    _add_status(add)
    _add_reload(add)
    _add_dead_letters(add("dead-letters", "list, replay or purge the records a dispatcher gave up on",
                          "Dead letters are records a dispatcher failed to deliver "
                          "dispatch.max_attempts times, kept in the spool until replayed or "
                          "purged."), common)
    _add_events(add("events", "list stored events (the database dispatcher's table), or show one",
                    "List the events stored by the database dispatcher, newest first, with "
                    "Senlin's filters (each repeatable), as a table or JSON; 'events show ID' "
                    "shows one event by its id or a unique prefix of 8+ characters."), common)
    _add_plugins(add)
    return parser


Add = Callable[[str, str, str], argparse.ArgumentParser]


def _common_options() -> argparse.ArgumentParser:
    # A parent of every parser, so --log-level goes before or after the command. SUPPRESS keeps
    # a subcommand's parser from writing a default over a level given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level", type=str.upper, choices=LEVELS, default=argparse.SUPPRESS,
        help="log level (default: INFO; for serve, the config's [log] level)",
    )
    return common


def _config_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "-c", "--config", default=default or config.default_path(),
        help="config file (default: $DISPATCHD_CONFIG or config/dispatchd.toml)",
    )


def _json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON, for scripts")


def _add_serve(add: Add) -> None:
    serve = add("serve", "run the daemon in the foreground until SIGTERM or SIGINT",
                "Run the daemon: listen on [server], keep the spool, run one worker per enabled "
                "dispatcher. Logs go to stderr as [log] says. SIGHUP or an edit of the config "
                "file reloads it; SIGTERM or SIGINT stops it gracefully.")
    _config_option(serve)
    serve.set_defaults(func=_serve)


def _add_check_config(add: Add) -> None:
    check = add("check-config", "validate a config file, dispatcher options included, and exit",
                "Validate a config file the way the daemon would, each enabled dispatcher's "
                "options included, and print every problem as 'key: message'. Exit 1 if any.")
    _config_option(check)
    _json_option(check, "the problems")
    check.set_defaults(func=_check_config)


def _add_status(add: Add) -> None:
    status = add("status", "show the running daemon's dispatchers and spool",
                 "Show each dispatcher of the running daemon (state, backlog, delivered, failed, "
                 "dead letters, lag, last error) and its spool.")
    _config_option(status)
    _json_option(status, "the daemon's whole answer")
    status.set_defaults(func=_status)


def _add_reload(add: Add) -> None:
    reload = add("reload", "make the running daemon reload its config file now, and show the result",
                 "Ask the running daemon to reload its config file now and wait for the result: "
                 "the dispatchers started, stopped and restarted, as JSON on stdout. A rejected "
                 "file changes nothing; its problems are printed and the exit status is 1.")
    _config_option(reload)
    reload.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the reload (default: 60)")
    reload.set_defaults(func=_reload)


def _add_dead_letters(dead: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    actions = dead.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="show dead letters, oldest first",
                                 description="Show dead letters, oldest first, as a table.")
    listing.add_argument("--dispatcher", "-d", help="only this dispatcher's")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default: 100)")
    listing.add_argument("--after", type=int, default=0, help="start after this dead-letter id")
    _json_option(listing, "one JSON object per dead letter, record included,")
    for name, summary in (("replay", "send a dispatcher's dead letters back to it, and to it only"),
                          ("purge", "delete a dispatcher's dead letters")):
        action = actions.add_parser(name, parents=[common], help=summary, description=summary + ".")
        action.add_argument("--dispatcher", "-d", help="the dispatcher (required)")
    for action in actions.choices.values():
        _config_option(action)
    dead.set_defaults(func=_dead_letters)


def _add_events(events: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    listing, show = cli_events.add_arguments(events, common)
    _config_option(listing)
    _config_option(show, argparse.SUPPRESS)  # "events -c FILE show ID" keeps FILE
    events.set_defaults(func=_events)


def _add_plugins(add: Add) -> None:
    plugins = add("plugins", "list every installed dispatcher and whether it loads",
                  "List every dispatcher registered under the dispatchd.dispatchers entry point: "
                  "name, module:class, distribution, and whether it imports.")
    _json_option(plugins, "the list")
    plugins.set_defaults(func=_plugins)


# -- serve and check-config ------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    logs.setup(_flag_level(args) or cfg.log.level, cfg.log.format, access=cfg.log.access,
               instance=cfg.server.instance)
    for problem in registry.check(cfg):
        log.warning("config: %s", problem)
    from . import service  # the server's imports are for this command only

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
    cfg, problems = _validate(args.config)
    if args.json:
        print(json.dumps([problem.as_dict() for problem in problems], indent=2))
    elif problems:
        _print_problems(args.config, problems)
    elif cfg is not None:
        enabled = ", ".join(cfg.dispatch.enabled) or "none"
        print(f"{args.config}: OK (enabled dispatchers: {enabled})")
    return 1 if problems else 0


def _validate(path: str) -> tuple[config.Config | None, list[Problem]]:
    """Every problem of the file at once: its keys and each dispatcher's options."""
    try:
        return validation.load(path), []
    except ConfigError as exc:
        return None, exc.problems


# -- talking to the running daemon ---------------------------------------------------------------


def _client(path: str, warn: bool = True) -> Client:
    found: Settings = settings(path)
    if found.problems and warn:
        print(f"dispatchd: warning: {path} has {len(found.problems)} problem(s) (see dispatchd "
              "check-config); its [server] and [spool] are used to find the daemon",
              file=sys.stderr)
    return Client(found, locate(found))


def _status(args: argparse.Namespace) -> int:
    client = _client(args.config)
    body = asyncio.run(client.request("GET", "/v1/status", REQUEST_TIMEOUT))
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        _print_status(body, client.target)
    return 0


def _reload(args: argparse.Namespace) -> int:
    client = _client(args.config, warn=False)  # the daemon's answer lists the problems
    where = f"dispatchd pid {client.target.pid}" if client.target.pid else "dispatchd"
    print(f"dispatchd: asking {where} at {client.target.url} to reload its config file",
          file=sys.stderr)
    request = client.request("POST", "/v1/config/reload", args.timeout)
    try:
        body = asyncio.run(_with_progress(request, _reload_waiting))
    except ServerError as exc:
        if exc.code == "invalid_config":
            exc.message = f"reload rejected, the daemon keeps its running config: {exc.message}"
        raise
    print(json.dumps(body, indent=2))
    print(f"dispatchd: {_reload_summary(body)}", file=sys.stderr)
    return 0


def _reload_waiting(elapsed: float) -> str:
    return (f"dispatchd: still waiting for the reload ({elapsed:.0f} s): a disabled dispatcher "
            "delivers its backlog first, for up to dispatch.drain_timeout")


async def _with_progress(work: Awaitable[T], note: Callable[[float], str]) -> T:
    """Await ``work``, printing ``note(seconds so far)`` to stderr while it takes long."""
    task = asyncio.ensure_future(work)
    start = time.monotonic()
    while True:
        done, _ = await asyncio.wait({task}, timeout=PROGRESS_EVERY)
        if done:
            return task.result()
        print(note(time.monotonic() - start), file=sys.stderr, flush=True)


def _dead_letters(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.dispatcher:
        print(f"dispatchd: dead-letters {args.action} needs --dispatcher NAME", file=sys.stderr)
        return 2
    client = _client(args.config)
    if args.action == "list":
        return _list_dead_letters(client, args)
    params = {"dispatcher": args.dispatcher}
    if args.action == "replay":
        print(f"dispatchd: sending the dead letters of {args.dispatcher} back to it",
              file=sys.stderr)
        body = asyncio.run(client.request("POST", "/v1/dead-letters/replay", 60.0, params))
        done = f"{body.get('replayed', 0)} dead letters of {args.dispatcher} queued for delivery"
    else:
        body = asyncio.run(client.request("DELETE", "/v1/dead-letters", 60.0, params))
        done = f"{body.get('purged', 0)} dead letters of {args.dispatcher} deleted"
    print(json.dumps(body))
    print(f"dispatchd: {done}", file=sys.stderr)
    return 0


def _list_dead_letters(client: Client, args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit), "after": str(args.after)}
    if args.dispatcher:
        params["dispatcher"] = args.dispatcher
    body = asyncio.run(client.request("GET", "/v1/dead-letters", REQUEST_TIMEOUT, params))
    letters: list[dict[str, Any]] = body.get("dead_letters", [])
    if args.json:
        for letter in letters:
            print(json.dumps(letter))
    else:
        _print_dead_letters(letters)
    more = f"; more after id {letters[-1]['id']} (--after)" if len(letters) == args.limit else ""
    print(f"{len(letters)} dead letters{more}", file=sys.stderr)
    return 0


def _events(args: argparse.Namespace) -> int:
    return cli_events.run(args, _client(args.config), REQUEST_TIMEOUT)


def _plugins(args: argparse.Namespace) -> int:
    infos = registry.inspect_all()
    if args.json:
        print(json.dumps([vars(info) for info in infos], indent=2))
        return 0
    rows = [[info.name, info.value, info.distribution or "-",
             "loadable" if info.error is None else f"error: {info.error}"] for info in infos]
    _print_table(["NAME", "ENTRY POINT", "DISTRIBUTION", "STATUS"], rows, truncate_last=False)
    return 0


# -- what operators read -----------------------------------------------------------------------

def _print_server_error(exc: ServerError) -> None:
    print(f"dispatchd: {exc.message}", file=sys.stderr)
    for detail in exc.details:
        print(f"  {_detail(detail)}", file=sys.stderr)


def _detail(item: Any) -> str:
    """A detail of the error shape in one line: config problems as ``loc: msg``."""
    if isinstance(item, dict) and isinstance(item.get("loc"), list) and "msg" in item:
        return str(Problem(tuple(item["loc"]), str(item["msg"])))
    if isinstance(item, dict) and "message" in item:
        where = ".".join(str(item[k]) for k in ("index", "field") if item.get(k) not in (None, ""))
        return f"{where}: {item['message']}" if where else str(item["message"])
    return item if isinstance(item, str) else json.dumps(item)


def _print_problems(path: str, problems: Sequence[Problem]) -> None:
    print(f"dispatchd: invalid config {path} ({len(problems)} problem(s)):", file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr)


def _print_status(body: dict[str, Any], target: Target) -> None:
    cfg, spool = body.get("config", {}), body.get("spool", {})
    pid = f" pid {target.pid}" if target.pid else ""
    stopping = " (shutting down)" if body.get("stopping") else ""
    instance = f" {body['instance']}" if body.get("instance") else ""
    print(f"dispatchd{instance}{pid} at {target.url}{stopping}, {body.get('accepted', 0):,} events "
          "accepted since start")
    print(f"config {cfg.get('path')}, generation {cfg.get('generation')}")
    print(_spool_line(spool))
    if cfg.get("last_reload_error"):
        print(f"last reload rejected: {_one_line(str(cfg['last_reload_error']))}")
    if cfg.get("restart_required"):
        print(f"restart required to apply: {', '.join(cfg['restart_required'])}")
    print()
    rows = [_dispatcher_row(d) for d in body.get("dispatchers", [])]
    headers = ["DISPATCHER", "STATE", "BACKLOG", "DELIVERED", "FAILED", "DEAD LETTERS", "LAG",
               "LAST ERROR"]
    _print_table(headers, rows, numeric={2, 3, 4, 5, 6})
    reports = [entry for entry in body.get("dispatchers", []) if entry.get("report")]
    if reports:
        print()
    for entry in reports:
        facts = ", ".join(f"{k}={v}" for k, v in entry["report"].items())
        print(f"{entry['name']}: {_one_line(facts)}")


def _dispatcher_row(entry: dict[str, Any]) -> list[str]:
    counts = [f"{entry.get(key, 0):,}" for key in ("backlog", "delivered", "failed", "dead_letters")]
    lag = _lag(entry.get("lag_seconds")) if entry.get("enabled") else "-"  # owed nothing
    return [entry["name"], entry.get("state", "?"), *counts, lag,
            _one_line(entry.get("last_error") or "-")]


def _spool_line(spool: dict[str, Any]) -> str:
    state = "open" if spool.get("open", True) else "NOT OPEN"
    parts = [f"backlog {spool.get('backlog', 0):,} of {spool.get('capacity', 0):,}"]
    if spool.get("full"):
        parts.append("FULL")
    if spool.get("free_bytes") is not None:
        reserve = _bytes(spool.get("reserve_bytes", 0))
        parts.append(f"{_bytes(spool['free_bytes'])} free (reserve {reserve})")
    if spool.get("low_space"):
        parts.append("LOW ON SPACE: ingest paused")
    if spool.get("quarantined"):
        parts.append(f"{spool['quarantined']} damaged file(s) moved aside")
    return f"spool {spool.get('path', '?')}: {state}, " + ", ".join(parts)


def _reload_summary(body: dict[str, Any]) -> str:
    verbs = (("started", "enabled"), ("stopped", "disabled"), ("restarted", "restarted"))
    changes = [f"{verb} {', '.join(body[key])}" for key, verb in verbs if body.get(key)]
    summary = f"reload applied, generation {body.get('generation')}: "
    summary += "; ".join(changes) or "no dispatcher changed"
    if body.get("restart_required"):
        summary += f"; restart required to apply {', '.join(body['restart_required'])}"
    return summary


def _print_dead_letters(letters: list[dict[str, Any]]) -> None:
    if not letters:
        return
    rows = [[str(d["id"]), d.get("dispatcher", "?"), str(d.get("seq", "")), str(d.get("attempts", "")),
             _when(d.get("failed_at")), _one_line(d.get("error") or "-")] for d in letters]
    _print_table(["ID", "DISPATCHER", "SEQ", "ATTEMPTS", "FAILED AT", "ERROR"], rows,
                 numeric={0, 2, 3})


def _lag(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours >= 24:
        return f"{hours // 24}d{hours % 24:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def _when(value: Any) -> str:
    """A dead letter's ``failed_at`` (epoch seconds or RFC 3339) to the second, in UTC."""
    if isinstance(value, int | float):
        return rfc3339(int(value)).split(".")[0] + "Z"
    return str(value).split(".")[0].removesuffix("Z") + "Z" if value else "-"


if __name__ == "__main__":
    sys.exit(main())

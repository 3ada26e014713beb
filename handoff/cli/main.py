"""The ``handoff`` command: ``serve`` runs the server; ``agents`` manages accounts; ``review``,
``export``, ``train`` and ``report`` run the learning loop."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from handoff.operator_output import quiet_dependencies, quiet_library_loggers
from handoff.settings import PROJECT_ROOT, SettingsError, load_settings

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handoff",
        description="Rasa support assistant with live human handoff.",
        epilog="Settings also come from HANDOFF_* environment variables; see the README.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server (chat page, websocket and REST channels, agent console)",
        description="Run the server. It listens at once and loads the model in the background; "
        "GET /health answers 200 once the assistant is ready.",
    )
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 5005)")
    serve.add_argument(
        "--model",
        type=Path,
        help="model archive, or a folder whose newest archive is served (default models/)",
    )
    serve.add_argument("--config", type=Path, help="TOML settings file (or HANDOFF_CONFIG)")

    train = commands.add_parser(
        "train",
        help="train, evaluate against the live model, and promote if not worse",
        description="Train the assistant from bot/ and data/ (a model whose inputs hash the "
        "same is reused), score it and the live model on the held-out test set "
        "(HANDOFF_TEST_DATA), write the comparison report (Markdown and JSON) next to the "
        "models, and promote the new model unless its accuracy or macro-F1 is worse by more "
        "than HANDOFF_PROMOTION_MARGIN. Running servers switch to a promoted model by "
        "themselves.",
    )
    train.add_argument(
        "--out",
        type=Path,
        help="folder for model archives (default: HANDOFF_MODEL_PATH if a folder, else models/)",
    )
    train.add_argument("--retrain", action="store_true", help="train even if a model is up to date")
    train.add_argument(
        "--promote",
        choices=("auto", "always", "never"),
        default="auto",
        help="auto: only if not worse than the live model (default); always: force; "
        "never: evaluate and report only",
    )

    export = commands.add_parser(
        "export",
        help="write approved candidates into data/learned/ and bot/domain/learned.yml",
        description="Write the approved training-data candidates into data/learned/ (NLU "
        "examples, stories, rules) and bot/domain/learned.yml (new intents and responses). "
        "Personal data is redacted, duplicates are dropped, and Rasa validates the result "
        "before anything is written. Running it again writes nothing new.",
    )
    export.add_argument("--config", type=Path, help="TOML settings file (or HANDOFF_CONFIG)")

    review = commands.add_parser(
        "review",
        help="list pending training-data candidates; approve, edit, reject or hold them out",
        description="Without an action: list the pending candidates grouped by intent, with "
        "flags (CONFLICT: the same text under another intent; LOW VALUE: the live model "
        "already gets it right confidently; +N: near-duplicates collapsed into it). "
        "Approving a collapsed item rejects its near-duplicates.",
    )
    review.add_argument("--config", type=Path, help="TOML settings file (or HANDOFF_CONFIG)")
    review.add_argument(
        "--as",
        dest="reviewer",
        required=False,
        help="maintainer username recorded as reviewer (needed for actions)",
    )
    review_actions = review.add_subparsers(dest="review_action", metavar="ACTION")
    for action, text in (
        ("approve", "approve candidates"),
        ("reject", "reject candidates"),
        (
            "hold-out",
            "put example candidates into the held-out test set (HANDOFF_TEST_DATA) at the "
            "next export, instead of the training data: models are scored on them",
        ),
    ):
        sub = review_actions.add_parser(action, help=text, description=text)
        sub.add_argument("ids", nargs="*", type=int, help="candidate ids")
        sub.add_argument(
            "--intent", help=f"{action} every pending candidate of this intent instead"
        )
        sub.add_argument(
            "--clean",
            action="store_true",
            help=f"{action} every pending candidate without a conflict or low-value flag",
        )
    edit = review_actions.add_parser(
        "edit", help="change a candidate's text or intent and approve it"
    )
    edit.add_argument("id", type=int)
    edit.add_argument("--text")
    edit.add_argument("--intent")

    report = commands.add_parser(
        "report",
        help="handoff rate, fallback rate by intent, waiting times, labels, model scores",
        description="Print the metrics that /metrics exposes for Prometheus, for people.",
    )
    report.add_argument("--config", type=Path, help="TOML settings file (or HANDOFF_CONFIG)")
    report.add_argument(
        "--days", type=float, default=7.0, help="look back this many days (default 7; 0: all)"
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write the maintainer's cockpit (charts over the last --days days, 30 if 0, and "
        "every model) as one self-contained HTML page instead",
    )

    models = commands.add_parser(
        "models",
        help="the model registry: list the models, promote one (roll back)",
        description="Every model `handoff train` registered, with its held-out scores, and "
        "which one is live. `promote NAME` makes NAME live by hand, e.g. to roll back to an "
        "earlier model: every running server switches to it within HANDOFF_MODEL_POLL_SECONDS.",
    )
    models.add_argument("--config", type=Path, help="TOML settings file (or HANDOFF_CONFIG)")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = model_commands.add_parser("list", help="list the registered models")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    promote = model_commands.add_parser(
        "promote", help="make a registered model live (roll back, or forward)"
    )
    promote.add_argument("name", help="the model archive's name, as `handoff models list` shows")
    promote.add_argument(
        "--as", dest="by", default="cli", help="who promotes it, for the record (default cli)"
    )

    agents = commands.add_parser(
        "agents",
        help="manage support agent accounts",
        description="Manage the accounts agents and maintainers sign in to the console with. "
        "Uses the database of HANDOFF_DATABASE_URL (default: var/handoff.db).",
    )
    agent_commands = agents.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    add = agent_commands.add_parser(
        "add",
        help="create an account",
        description="Create an account. The password is asked for (twice) on the terminal, "
        "or read from standard input with --password-stdin.",
    )
    add.add_argument("username", help="sign-in name: lower-case letters, digits, '_', '.', '-'")
    add.add_argument("--name", required=True, help='name users see, e.g. "Dana Scott"')
    add.add_argument(
        "--role",
        choices=("agent", "maintainer"),
        default="agent",
        help="maintainers can also manage accounts and review training data (default agent)",
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    agent_commands.add_parser("list", help="list accounts")
    for action, text in (
        ("disable", "block sign-in, end sessions, close its consoles, requeue its conversations"),
        ("enable", "allow sign-in"),
    ):
        sub = agent_commands.add_parser(action, help=text)
        sub.add_argument("username")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    quiet_dependencies(str(PROJECT_ROOT))
    if args.command == "serve":
        return _serve(args)
    if args.command == "agents":
        return _agents(args)
    if args.command in ("train", "export", "review", "report", "models"):
        return _learning_command(args)
    raise AssertionError(args.command)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_library_loggers()
    from handoff.assistant.rasa_logging import configure_rasa_logging

    configure_rasa_logging(level)


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(
            config_file=args.config, host=args.host, port=args.port, model_path=args.model
        )
    except SettingsError as error:
        print(f"handoff serve: {error}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)

    from handoff.assistant.model_files import ModelNotFoundError, resolve_model_path

    try:
        model_file = resolve_model_path(settings.model_path)
    except ModelNotFoundError as error:
        print(f"handoff serve: {error}", file=sys.stderr)
        return 2

    from handoff.assistant.action_server import plan_action_server
    from handoff.assistant.endpoints import EndpointsError, read_endpoints
    from handoff.web.app import create_app

    try:
        endpoints = read_endpoints(settings.endpoints_path())
        app = create_app(settings, endpoints)
    except EndpointsError as error:
        print(f"handoff serve: {error}", file=sys.stderr)
        return 2
    print(
        f"Starting the server on http://{settings.host}:{settings.port} "
        f"with model {model_file.name} (loading takes 10 s to a minute, by pipeline)...",
        flush=True,
    )
    if endpoints.path is not None:
        print(f"Rasa endpoints from {endpoints.path}:", flush=True)
        for line in endpoints.describe():
            print(f"  {line}", flush=True)
    _, actions = plan_action_server(endpoints.action_url, settings.bot_dir, settings.action_server)
    print(f"  {actions}" if endpoints.path is not None else actions, flush=True)
    app.run(host=settings.host, port=settings.port, access_log=False, motd=False)
    return 0


def _read_password(from_stdin: bool) -> str:
    import getpass

    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _agents(args: argparse.Namespace) -> int:
    import asyncio

    from handoff.storage.migrate import upgrade
    from handoff.storage.store import Store
    from handoff.web import auth

    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"handoff agents: {error}", file=sys.stderr)
        return 2

    async def run() -> int:
        upgrade(settings.database_url)
        store = await Store.open(settings.database_url)
        try:
            if args.agents_command == "add":
                password = _read_password(args.password_stdin)
                agent = await auth.create_agent(
                    store, args.username, args.name, password, args.role
                )
                print(f"Created {agent.role} {agent.username} ({agent.display_name}).")
            elif args.agents_command == "list":
                for agent in await store.list_agents():
                    state = "disabled" if agent.disabled else "active"
                    print(f"{agent.username:<20} {agent.role:<11} {state:<9} {agent.display_name}")
            else:
                found = await store.agent_by_username(args.username)
                if found is None:
                    print(f"handoff agents: no agent {args.username!r}", file=sys.stderr)
                    return 1
                await store.update_agent(found.id, disabled=args.agents_command == "disable")
                print(f"{args.agents_command.capitalize()}d {found.username}.")
        finally:
            await store.close()
        return 0

    try:
        return asyncio.run(run())
    except (auth.AccountError, ValueError) as error:
        print(f"handoff agents: {error}", file=sys.stderr)
        return 1


def _learning_command(args: argparse.Namespace) -> int:
    """``train``, ``export``, ``review``, ``report`` and ``models``: they share the
    database."""
    import asyncio

    from handoff.cli import learning as learning_cli

    name = f"handoff {args.command}"
    try:
        settings = load_settings(config_file=getattr(args, "config", None))
    except SettingsError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level if settings.log_level != "INFO" else "WARNING")
    try:
        return asyncio.run(learning_cli.run(args, settings))
    except learning_cli.CommandError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())

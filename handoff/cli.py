"""The ``handoff`` command: ``handoff serve`` runs the server, ``handoff train`` trains the bot."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from handoff.settings import PROJECT_ROOT, SettingsError, load_settings


def _quiet_dependencies() -> None:
    """Environment for Rasa/TensorFlow, set before they are imported: no telemetry (this
    machine has no internet), less TensorFlow noise, Rasa's cache inside the project."""
    os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RASA_CACHE_DIRECTORY", str(PROJECT_ROOT / ".rasa" / "cache"))
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    # Dependencies' deprecation notices (TensorFlow, matplotlib, ...) are not actionable here.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*deprecated.*")


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
        help="train the assistant from bot/ and data/ if they changed since the last model",
        description="Train the bundled assistant. A model whose training inputs (bot/, data/, "
        "Rasa version) hash to the same value is reused instead of retrained.",
    )
    train.add_argument(
        "--out",
        type=Path,
        default=PROJECT_ROOT / "models",
        help="folder for model archives (default models/)",
    )
    train.add_argument("--force", action="store_true", help="train even if a model is up to date")

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
        ("disable", "block sign-in and end sessions"),
        ("enable", "allow sign-in"),
    ):
        sub = agent_commands.add_parser(action, help=text)
        sub.add_argument("username")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    _quiet_dependencies()
    if args.command == "serve":
        return _serve(args)
    if args.command == "agents":
        return _agents(args)
    return _train(args)


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(
            config_file=args.config, host=args.host, port=args.port, model_path=args.model
        )
    except SettingsError as error:
        print(f"handoff serve: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from rasa.utils.log_utils import configure_structlog

    # Rasa's structured logs print at DEBUG unless configured; keep them at our level.
    configure_structlog(logging.getLevelName(settings.log_level))

    from handoff.assistant import ModelNotFoundError, resolve_model_path

    try:
        model_file = resolve_model_path(settings.model_path)
    except ModelNotFoundError as error:
        print(f"handoff serve: {error}", file=sys.stderr)
        return 2

    from handoff.app import create_app

    print(
        f"Starting the server on http://{settings.host}:{settings.port} "
        f"with model {model_file.name} (loading takes about half a minute)...",
        flush=True,
    )
    app = create_app(settings)
    app.run(host=settings.host, port=settings.port, access_log=False, motd=False)
    return 0


def _train(args: argparse.Namespace) -> int:
    from handoff.training import ensure_model

    print("Checking whether the assistant needs training...", flush=True)
    try:
        trained = ensure_model(args.out, force=args.force)
    except Exception as error:  # Rasa reports invalid data with many exception types
        print(f"handoff train: training failed: {error}", file=sys.stderr)
        return 1
    if trained.reused:
        print(f"Model is up to date: {trained.path} (training inputs unchanged)")
    else:
        print(f"Trained {trained.path} in {trained.seconds:.0f} s")
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

    from handoff import auth
    from handoff.migrate import upgrade
    from handoff.store import Store

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


if __name__ == "__main__":
    sys.exit(main())

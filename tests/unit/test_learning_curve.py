"""The learning-curve benchmark's pure parts: data, splits, routing bookkeeping, export, metrics.

No Rasa and no training here: parse results are written by hand in the shape Rasa returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.learning_curve import (
    PIPELINES,
    DataError,
    Dataset,
    Exporter,
    Loop,
    Prediction,
    Utterance,
    at_target_precision,
    build_parser,
    check_args,
    compute_metrics,
    diet_epochs,
    fallback_threshold,
    format_header,
    format_row,
    initial_split,
    load_dataset,
    needs_verification,
    nlu_config,
    plot,
    predict,
    random_pool,
    write_yaml,
)
from handoff.core.triggers import FALLBACK_INTENT, HandoffPolicy

CLINC = Path("/work/shared/datasets/clinc150/data_full.json")
THRESHOLD_ONLY = HandoffPolicy(
    request_intents=frozenset(), always_human_intents=frozenset(), intent_thresholds={}
)


def parse(intent: str, confidence: float, fallback: bool = False) -> dict[str, Any]:
    """Parse data as Rasa returns it; with ``fallback`` the FallbackClassifier fired."""
    ranking = [{"name": intent, "confidence": confidence}]
    if fallback:
        ranking.insert(0, {"name": FALLBACK_INTENT, "confidence": 0.6})
    return {"intent": dict(ranking[0]), "intent_ranking": ranking}


def write_dataset(folder: Path) -> tuple[Path, Path]:
    train = [[f"{intent} example {n}", intent] for intent in ("a", "b", "c") for n in range(6)]
    document = {
        "train": train,
        "val": [["a val", "a"]],
        "test": [["a test", "a"], ["b test", "b"], ["c test", "c"]],
        "oos_train": [["nonsense", "oos"]],
        "oos_val": [],
        "oos_test": [["what is love", "oos"], ["sing a song", "oos"]],
    }
    data, domains = folder / "data.json", folder / "domains.json"
    data.write_text(json.dumps(document))
    domains.write_text(json.dumps({"letters": ["a", "b"], "more": ["c"]}))
    return data, domains


# Data ---------------------------------------------------------------------------------------


def test_load_dataset_keeps_the_chosen_domains(tmp_path: Path) -> None:
    data, domains = write_dataset(tmp_path)
    dataset = load_dataset(data, domains, ["letters"])
    assert dataset.intents == ("a", "b")
    assert len(dataset.train) == 12 and {u.intent for u in dataset.train} == {"a", "b"}
    assert dataset.test == (Utterance("a test", "a"), Utterance("b test", "b"))
    assert dataset.oos_test == ("what is love", "sing a song")


def test_load_dataset_all_needs_no_domains_file(tmp_path: Path) -> None:
    data, _ = write_dataset(tmp_path)
    dataset = load_dataset(data, None, ["all"])
    assert dataset.intents == ("a", "b", "c")
    assert len(dataset.train) == 18 and len(dataset.test) == 3


@pytest.mark.parametrize(
    ("chosen", "message"),
    [(["letters", "nope"], "unknown domain"), (["letters"], "no domains file")],
)
def test_load_dataset_explains_bad_domains(tmp_path: Path, chosen: list[str], message: str) -> None:
    data, domains = write_dataset(tmp_path)
    with pytest.raises(DataError, match=message):
        load_dataset(data, domains if "nope" in chosen else None, chosen)


def test_load_dataset_refuses_other_formats(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"train": [["only text"]], "test": []}))
    with pytest.raises(DataError, match="pairs"):
        load_dataset(path, None, ["all"])
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(tmp_path / "missing.json", None, ["all"])


@pytest.mark.skipif(not CLINC.exists(), reason=f"{CLINC} is not on this machine")
def test_clinc150_default_domains() -> None:
    dataset = load_dataset(CLINC, CLINC.parent / "domains.json", ["banking", "credit_cards"])
    assert len(dataset.intents) == 30
    assert (len(dataset.train), len(dataset.test), len(dataset.oos_test)) == (3000, 900, 1000)


# Splits -------------------------------------------------------------------------------------


def test_initial_split_takes_k_per_intent_and_streams_the_rest(tmp_path: Path) -> None:
    dataset = load_dataset(*write_dataset(tmp_path), ["all"])
    initial, stream = initial_split(dataset.train, 2, seed=7)
    assert sorted(u.intent for u in initial) == ["a", "a", "b", "b", "c", "c"]
    assert sorted(initial + stream) == sorted(dataset.train)
    assert initial_split(dataset.train, 2, seed=7) == (initial, stream)
    assert initial_split(dataset.train, 2, seed=8) != (initial, stream)
    everything, nothing = initial_split(dataset.train, 50, seed=7)
    assert len(everything) == 18 and nothing == []


def test_random_pool_is_a_fixed_permutation() -> None:
    stream = [Utterance(str(n), "a") for n in range(50)]
    pool = random_pool(stream, seed=1)
    assert sorted(pool) == sorted(stream) and pool != stream
    assert random_pool(stream, seed=1) == pool


# Routing and the simulated agent ------------------------------------------------------------


def test_loop_labels_handed_off_messages_with_their_true_intent() -> None:
    loop = Loop(THRESHOLD_ONLY, round_labels=2, initial_labels=10)
    assert loop.observe(Utterance("hi there", "greet"), parse("greet", 0.95)) is False
    assert loop.observe(Utterance("card gone", "lost_card"), parse("greet", 0.95)) is False
    assert loop.observe(Utterance("hmm", "balance"), parse("greet", 0.4, fallback=True)) is True
    assert not loop.round_due()
    assert loop.observe(Utterance("eh", "transfer"), parse("balance", 0.5, fallback=True))
    assert loop.round_due()
    assert loop.labels_used == 12 and loop.agent_labels == 2
    labels, traffic = loop.take_labels()
    assert labels == [Utterance("hmm", "balance"), Utterance("eh", "transfer")]
    assert (traffic.messages, traffic.handed_off, traffic.automated) == (4, 2, 2)
    assert traffic.automated_correct == 1
    assert loop.pending == [] and loop.round_traffic.messages == 0
    assert loop.traffic.messages == 4 and not loop.round_due()


def test_loop_uses_the_servers_policy() -> None:
    policy = HandoffPolicy(
        always_human_intents=frozenset({"report_fraud"}), intent_thresholds={"transfer": 0.9}
    )
    loop = Loop(policy, round_labels=10, initial_labels=0)
    assert loop.observe(Utterance("fraud!", "report_fraud"), parse("report_fraud", 0.99))
    assert loop.observe(Utterance("send money", "transfer"), parse("transfer", 0.8))
    assert not loop.observe(Utterance("send money now", "transfer"), parse("transfer", 0.95))
    assert [u.intent for u in loop.pending] == ["report_fraud", "transfer"]


def test_loop_can_label_answers_agents_verify() -> None:
    loop = Loop(
        THRESHOLD_ONLY, round_labels=10, initial_labels=0, threshold=0.6, verification_band=0.15
    )
    assert not loop.observe(Utterance("sure answer", "a"), parse("a", 0.9))
    assert not loop.observe(Utterance("just above", "b"), parse("a", 0.7))
    assert loop.observe(Utterance("below", "c"), parse("a", 0.5, fallback=True))
    assert [u.text for u in loop.pending] == ["just above", "below"]
    assert (loop.traffic.automated, loop.traffic.verified, loop.agent_labels) == (2, 1, 2)
    assert needs_verification(parse("a", 0.7), THRESHOLD_ONLY, 0.6, 0.0) is False
    strict = HandoffPolicy(intent_thresholds={"a": 0.8})
    assert needs_verification(parse("a", 0.9), strict, 0.6, 0.15)


def ranked(intent: str, confidence: float, runner_up: float) -> dict[str, Any]:
    data = parse(intent, confidence)
    data["intent_ranking"] = [
        {"name": intent, "confidence": confidence},
        {"name": "other", "confidence": runner_up},
    ]
    return data


@pytest.mark.parametrize(
    ("order", "verified"),
    [
        # the smallest margins first; "hello there" and "Hello there!" are one decision
        ("margin", ["hello there", "Hello there!", "where is it"]),
        ("arrival", ["what time", "hello there"]),
    ],
)
def test_agents_verify_a_budget_of_the_queue_in_the_servers_order(
    order: str, verified: list[str]
) -> None:
    loop = Loop(
        THRESHOLD_ONLY,
        round_labels=1,
        initial_labels=0,
        threshold=0.5,
        verification_band=0.5,
        verification_budget=2,
        verification_order=order,
    )
    for text, confidence, runner_up in [
        ("what time", 0.9, 0.05),
        ("hello there", 0.6, 0.35),
        ("where is it", 0.7, 0.2),
        ("Hello there!", 0.62, 0.3),
    ]:
        assert not loop.observe(Utterance(text, "a"), ranked("a", confidence, runner_up))
    assert loop.pending == [] and len(loop.queue) == 4 and loop.agent_labels == 0
    assert loop.observe(Utterance("unsure", "b"), parse("a", 0.3, fallback=True))
    labels, traffic = loop.take_labels()
    assert [u.text for u in labels] == ["unsure", *verified]
    assert loop.agent_labels == 1 + 2  # a collapsed entry is one decision
    assert traffic.verified == len(verified) and loop.traffic.verified == len(verified)
    assert len(loop.queue) == 4 - len(verified)  # the rest waits for the next round


# Export -------------------------------------------------------------------------------------


def test_exporter_dedupes_against_everything_exported_before(tmp_path: Path) -> None:
    exporter = Exporter(["balance", "transfer"])
    first = exporter.export([Utterance("What is my balance?", "balance")])
    assert first.written == 1 and exporter.size == 1
    second = exporter.export(
        [
            Utterance("what is my balance", "balance"),  # the same once normalised
            Utterance("WHAT IS MY BALANCE!", "transfer"),  # the same text, another intent
            Utterance("send 20 to [mum](person)", "transfer"),
            Utterance("send 20 to [mum](person)", "transfer"),
        ]
    )
    assert (second.written, second.duplicates, second.conflicts) == (1, 2, 1)
    assert exporter.size == 2
    path = tmp_path / "round.yml"
    write_yaml(second.document, path)
    document = yaml.safe_load(path.read_text())
    assert document["nlu"] == [{"intent": "transfer", "examples": "- send 20 to (mum)(person)\n"}]
    assert "examples: |" in path.read_text()


def test_exporter_redacts_personal_data() -> None:
    exporter = Exporter(["contact"])
    result = exporter.export([Utterance("mail me at jo@example.com", "contact")])
    assert result.document["nlu"][0]["examples"] == "- mail me at <email>\n"


# Config -------------------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_nlu_config_of_the_bot_configs(pipeline: str) -> None:
    config = yaml.safe_load(PIPELINES[pipeline].read_text())
    nlu = nlu_config(config, epochs=7, threshold=0.5)
    assert "policies" not in nlu and nlu["language"] == config["language"]
    if diet_epochs(config) is None:  # no DIET: --epochs changes nothing
        assert diet_epochs(nlu) is None
    else:
        assert diet_epochs(nlu) == 7 and diet_epochs(nlu_config(config)) == diet_epochs(config)
    assert fallback_threshold(nlu) == 0.5
    assert fallback_threshold(nlu_config(config)) == fallback_threshold(config)
    assert config["policies"], "the bot config itself is unchanged"


def test_nlu_config_needs_a_fallback_classifier() -> None:
    with pytest.raises(ValueError, match="FallbackClassifier"):
        nlu_config({"pipeline": [{"name": "DIETClassifier"}]})


# Metrics ------------------------------------------------------------------------------------


def test_compute_metrics() -> None:
    predictions = [
        Prediction("a", "a", handed_off=False),  # automated, right
        Prediction("a", "b", handed_off=False),  # automated, wrong
        Prediction("b", "b", handed_off=True),  # handed off (right guess)
        Prediction("c", "a", handed_off=True),  # handed off (wrong guess)
        Prediction(None, "a", handed_off=True),  # out of scope, recalled
        Prediction(None, "b", handed_off=False),  # out of scope, answered: wrong answer
    ]
    metrics = compute_metrics(predictions)
    assert metrics["in_scope"] == 4 and metrics["oos"] == 2
    assert metrics["accuracy"] == 0.5
    assert metrics["automation_rate"] == 0.5
    assert metrics["automated_precision"] == 0.5
    assert metrics["automated_precision_with_oos"] == pytest.approx(1 / 3)
    assert metrics["oos_recall"] == 0.5
    assert metrics["automated_accuracy"] == 0.25


def test_compute_metrics_without_automated_answers() -> None:
    metrics = compute_metrics([Prediction("a", "a", handed_off=True)])
    assert metrics["automation_rate"] == 0.0
    assert metrics["automated_precision"] is None and metrics["oos_recall"] is None


def test_predict_skips_the_fallback_pseudo_intent() -> None:
    prediction = predict("a", parse("a", 0.3, fallback=True), THRESHOLD_ONLY)
    assert prediction == Prediction("a", "a", handed_off=True, confidence=0.3)


def test_the_operating_point_is_chosen_on_in_scope_queries_and_reports_oos_recall() -> None:
    predictions = [
        Prediction("a", "a", False, confidence=0.9),
        Prediction("b", "b", False, confidence=0.7),
        Prediction("b", "a", False, confidence=0.5),  # wrong: the threshold goes above it
        Prediction("a", "a", True, confidence=0.95, policy_handoff=True),  # never automated
        Prediction(None, "a", False, confidence=0.6),  # out of scope, below the threshold
        Prediction(None, "b", False, confidence=0.8),  # out of scope, automated (wrong)
    ]
    point = at_target_precision(predictions, target=1.0, ambiguity=0.0)
    assert point["threshold"] == 0.7 and point["reached"]
    assert point["automation_rate"] == 2 / 4  # of the in-scope queries
    assert point["automated_precision"] == 1.0
    assert point["oos_recall"] == 1 / 2


# Output -------------------------------------------------------------------------------------


def results(rounds: int) -> dict[str, Any]:
    def metrics(value: float) -> dict[str, Any]:
        keys = ("accuracy", "automation_rate", "automated_precision", "oos_recall")
        return {key: value for key in keys}

    return {
        "settings": {
            "dataset": {"name": "clinc150/data_full.json", "intents": ["a", "b"]},
            "pipeline": "default",
            "k": 5,
            "round_labels": 200,
        },
        "rounds": [
            {
                "round": n,
                "labels_used": 150 + 200 * n,
                "training_examples": 150 + 190 * n,
                "train_s": 30.5,
                "hitl": metrics(0.5 + 0.1 * n),
                "random": metrics(0.4 + 0.1 * n) if n else None,
            }
            for n in range(rounds)
        ],
        "ceiling": metrics(0.95),
    }


def test_table_rows_line_up() -> None:
    rows = [format_row(row) for row in results(2)["rounds"]]
    assert len({len(line) for line in [format_header(), *rows]}) == 1
    assert rows[1].split()[:4] == ["1", "350", "340", "0.600"]
    assert rows[0].split()[-4:] == ["-", "-", "-", "-"]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "curve.png"
    plot(results(3), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_and_defaults() -> None:
    args = build_parser().parse_args([])
    assert (args.k, args.round_labels, args.pipeline, args.domains) == (
        5,
        200,
        "default",
        "banking,credit_cards",
    )
    assert args.epochs is None and args.max_rounds == 0  # the config's epochs; all traffic
    help_text = build_parser().format_help()
    for option in ("--data", "--domains", "--pipeline", "--round-labels", "--max-rounds"):
        assert option in help_text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--verification-budget", "50"], "needs a --verification-band"),
        (["--verification-band", "0.2", "--verification-budget", "-1"], "0 (no limit) or positive"),
        (["--verification-band", "0.2", "--verification-order", "random"], "invalid choice"),
    ],
)
def test_bad_verification_options_are_refused_with_a_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_info:
        check_args(parser, parser.parse_args(argv))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_dataset_is_immutable() -> None:
    dataset = Dataset(intents=("a",), train=(), test=(), oos_test=())
    with pytest.raises(AttributeError):
        dataset.intents = ("b",)  # type: ignore[misc]

"""Deployment files checked against the real server: the Grafana dashboard queries only metrics the
server exports, and docker-compose.yml passes only settings the server knows. (Building and running
the images is tests/docker/smoke.sh's job: it needs a Docker engine.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from service.settings import Settings

from conftest import REPO, run_server

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "asr.json"
ALERTS = REPO / "deploy" / "alerts.yml"
SUFFIXES = {"counter": ("",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def families(metrics_text: str) -> set[str]:
    """Every series name the server declares (`# TYPE` lines), including those with no sample yet
    (the text format names a counter NAME_total already; a histogram NAME, its series NAME_bucket...)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", metrics_text, flags=re.MULTILINE):
        names |= {name + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names


def alert_rules() -> list[dict]:
    import yaml

    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard_metrics() -> set[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {
        name for panel in panels for target in panel["targets"] for name in re.findall(r"\basr_\w+", target["expr"])
    }


def test_every_dashboard_metric_is_exported(exported_folder, family, realspeech, tmp_path):
    if family != "base":
        pytest.skip("the metrics do not depend on the model family")
    audio = Path(realspeech[0]["path"])
    with run_server(exported_folder, log_dir=tmp_path) as server:
        response = httpx.post(server.url + "/transcribe", files={"file": audio.open("rb")}, timeout=60)
        assert response.status_code == 200, response.text
        text = httpx.get(server.url + "/metrics").text
    lines = [line for line in text.splitlines() if line and line[0] != "#"]
    exported = {line.split("{")[0].split(" ")[0] for line in lines} | families(text)
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= exported
    alerted = {name for rule in alert_rules() for name in re.findall(r"\basr_\w+", rule["expr"])}
    assert alerted and alerted <= exported, f"alert rules query what is not exported: {sorted(alerted - exported)}"
    wanted = dashboard_metrics()
    assert len(wanted) >= 10  # requests, latencies, queue, batch sizes, real-time factor, streams, model
    assert wanted <= exported, f"not exported: {sorted(wanted - exported)}"
    # The per-model selector: every panel on a series with a model label shows the models chosen.
    by_model = {line.split("{")[0] for line in lines if 'model="' in line} | {"asr_model_info"}
    (variable,) = json.loads(DASHBOARD.read_text())["templating"]["list"]
    assert variable["name"] == "model" and variable["includeAll"] and variable["multi"]
    assert re.fullmatch(r"label_values\((asr_\w+), model\)", variable["query"]["query"]).group(1) in by_model
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            for name in set(re.findall(r"\basr_\w+", target["expr"])) & by_model:
                assert re.search(name + r'\{(model|name)=~"\$model"', target["expr"]), (panel["title"], name)


@pytest.mark.fast
def test_dashboard_panels_cover_what_operators_watch():
    titles = " ".join(panel["title"].lower() for panel in json.loads(DASHBOARD.read_text())["panels"])
    for topic in (
        "requests",
        "latency",
        "queue depth",
        "batch size",
        "real-time factor",
        "active streams",
        "error rate",
        "stream sessions",
        "stream latency",
        "realtime events",
        "queue saturation",
        "beam-search workers",
        "process",
    ):
        assert topic in titles, topic
    datasource = (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    uids = {panel["datasource"]["uid"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert uids == {re.search(r"uid: (\S+)", datasource).group(1)}


@pytest.mark.fast
def test_compose_sets_only_known_settings():
    fields = {f"ASR_{name.upper()}" for name in Settings.model_fields}
    compose = (REPO / "docker-compose.yml").read_text() + (REPO / "docker-compose.gpu.yml").read_text()
    passed = set(re.findall(r"^\s+(ASR_\w+):", compose, flags=re.MULTILINE))
    assert passed and passed <= fields, sorted(passed - fields)
    scrape = (REPO / "deploy" / "prometheus.yml").read_text()
    assert re.search(r'targets: \["asr:8000"\]', scrape) and "metrics_path: /metrics" in scrape


@pytest.mark.fast
def test_empty_settings_from_compose_mean_unset(monkeypatch):
    monkeypatch.setenv("ASR_LM", "")  # what `ASR_LM: ${ASR_LM:-}` passes when no LM is configured
    monkeypatch.setenv("ASR_MODEL_NAME", " ")
    monkeypatch.setenv("ASR_DEFAULT_MODEL", "")
    (served,) = Settings(model="m").models
    assert served.lm is None and served.name == "m"


def test_alert_rules_load_in_prometheus():
    names = {rule["alert"] for rule in alert_rules()}
    assert {"ASRHigh5xxRate", "ASRQueueSaturated", "ASRNoReadyWorker", "ASRLatencyP95OverTarget"} <= names
    for rule in alert_rules():
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in ("page", "warn"), rule["alert"]
    scrape = (REPO / "deploy" / "prometheus.yml").read_text()
    assert "/etc/prometheus/alerts.yml" in scrape
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in (REPO / "docker-compose.yml").read_text()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (apt-get install prometheus) checks the rules' syntax; the rest is checked above")
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and f"SUCCESS: {len(alert_rules())} rules found" in result.stdout, (
        result.stdout + result.stderr
    )

"""`python -m nbkit serve`, tested for real: a server process with the tiny models on 127.0.0.1, called over
HTTP with urllib (and http.client where a request must arrive exactly as written).

Most tests share one server; the token, the full queue and kill -9 need servers of their own.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import http.client
import io
import json
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from nbkit.png import png_bytes, read_png_metadata
from nbkit.server.queue.batching import retry_after_seconds
from tests.server_process import TINY_MODELS, module_server, running_server, start_server, stop_server

PLAYGROUND = "https://saharmor.github.io"


# ---- calling the server


def call(url: str, body=None, method: str | None = None, headers: dict | None = None,
         timeout: float = 60) -> tuple[int, dict, object]:
    """(status, headers, JSON or bytes) for any answer, 4xx and 5xx included."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = dict(headers or {})
    if data is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"         # what the API asks for
    request = urllib.request.Request(url, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, answer_headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, answer_headers, raw = error.code, dict(error.headers), error.read()
    kind = answer_headers.get("content-type", "")
    return status, {k.lower(): v for k, v in answer_headers.items()}, \
        json.loads(raw) if kind.startswith("application/json") else raw


def raw_get(url: str, path: str) -> tuple[int, dict]:
    """GET with the path sent exactly as written (no client-side normalisation of `..`)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if response.getheader("content-type", "").startswith(
            "application/json") else {}
    finally:
        connection.close()


def submit(server_url: str, body: dict, headers: dict | None = None) -> dict:
    status, _, answer = call(server_url + "api/jobs", body, headers=headers)
    assert status == 202, answer
    return answer


def status_of(server_url: str, job_id: str) -> dict:
    status, _, answer = call(f"{server_url}api/jobs/{job_id}")
    assert status == 200, answer
    return answer


def wait_for(check, timeout: float = 90, every: float = 0.05):
    """Polls `check` until it returns something true, and returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(f"still not true after {timeout} s: {check}")


def finished(server_url: str, job_id: str, timeout: float = 300) -> dict:
    return wait_for(lambda: (s := status_of(server_url, job_id))["state"] in ("done", "failed", "cancelled")
                    and s, timeout)


def events(url: str, timeout: float = 90):
    """(event type, data) from a Server-Sent Events stream, until the server ends it."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kind, data = None, []
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
            elif not line and kind:
                yield kind, json.loads("\n".join(data))
                kind, data = None, []


def manifest(out: Path, run: str) -> list[dict]:
    path = out / run / "manifest.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def blocker(server_url: str, seed: int) -> dict:
    """A job of 8 images, to keep the worker busy while the jobs under test queue behind it."""
    return submit(server_url, {"prompts": ["a long queue"], "n_images": 8, "seed": seed})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from module_server(tmp_path_factory.mktemp("server"), "--max-queue", "8", "--max-images", "16",
                             "--max-batch", "4")


# ---- the shared server


def test_the_page_and_the_info(server):
    status, headers, page = call(server.url)
    assert status == 200 and headers["content-type"].startswith("text/html") and b"<" in page
    status, _, info = call(server.url + "api/info")
    assert status == 200
    assert info["model"].endswith("dallebart-tiny") and info["clip"].endswith("clip-tiny")
    assert (info["max_images"], info["max_queue"], info["max_batch"]) == (16, 8, 4)
    assert set(info["defaults"]) == {"n_images", "temperature", "top_k", "top_p", "condition_scale"}
    assert info["max_prompt_chars"] > 0 and info["version"]


def test_progress_events_name_the_stage_in_order_and_the_prompts_that_were_cut(server):
    from nbkit.generation.progress import STAGE_TEXT, STAGES

    long_prompt = "a red cube, " * 24                             # 288 characters, over 64 tokens
    job = submit(server.url, {"prompts": [long_prompt, "a short one"], "n_images": 1, "seed": 5})
    seen = list(events(f"{server.url}api/jobs/{job['id']}/events"))
    progress = [data for kind, data in seen if kind == "progress"]
    stages = [data["stage"] for data in progress]
    assert {"drawing", "decoding", "saving"} <= set(stages), stages
    order = [STAGES.index(stage) for stage in dict.fromkeys(stages)]
    assert order == sorted(order), stages                       # compiling → drawing → decoding → saving
    assert all(data["label"].startswith(STAGE_TEXT[data["stage"]]) for data in progress)
    assert all("of 2 images" in data["label"] for data in progress)
    assert progress[-1]["cut"] == [long_prompt]                # only what was cut, each once


def test_a_body_with_several_wrong_fields_names_every_one_at_once(server):
    status, _, answer = call(server.url + "api/jobs", {"prompts": ["a cat", "  "], "seed": -5, "top_k": 0,
                                                       "temperature": "hot", "n_images": 1})
    assert status == 400 and answer["field"] == "prompts[1]"
    fields = [error["field"] for error in answer["errors"]]
    assert fields == ["prompts[1]", "seed", "temperature", "top_k"], answer
    assert all(error["error"].startswith(error["field"]) for error in answer["errors"])


def test_a_watched_job_streams_its_place_previews_images_and_end(server):
    ahead = blocker(server.url, 1)
    job = submit(server.url, {"prompts": ["a red cube", "a blue ball"], "n_images": 2, "seed": 11,
                              "negative_prompt": "blur"})
    assert job["state"] == "queued" and job["position"] >= 1
    seen = list(events(f"{server.url}api/jobs/{job['id']}/events"))
    kinds = [kind for kind, _ in seen]
    assert kinds[0] == "queued" and kinds[-1] == "done"
    previews = [p for kind, data in seen if kind == "progress" for p in data.get("previews", [])]
    assert previews and all(p["data"].startswith("data:image/jpeg;base64,") for p in previews)
    assert base64.b64decode(previews[0]["data"].split(",", 1)[1])[:2] == b"\xff\xd8"
    images = [data for kind, data in seen if kind == "image"]
    assert sorted((i["prompt_index"], i["image_index"]) for i in images) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    done = seen[-1][1]
    assert done["state"] == "done" and done["images_done"] == done["images_total"] == 4
    assert done["tokens_done"] == done["tokens_total"] == 4 * 256
    for image in images:
        status, headers, png = call(server.url + image["url"].lstrip("/"))
        assert status == 200 and headers["content-type"] == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    entries = manifest(server.out, done["run"])
    assert sorted(e["file"] for e in entries) == sorted(i["file"] for i in images)
    assert {e["negative_prompt"] for e in entries} == {"blur"}
    assert finished(server.url, ahead["id"])["state"] == "done"


def test_the_same_request_again_returns_the_saved_images_without_making_them(server):
    body = {"prompt": "a green hill", "n_images": 2, "seed": 12}
    first = finished(server.url, submit(server.url, body)["id"])
    batches_before = call(server.url + "api/info")[2]["queue"]["batches_run"]
    again = submit(server.url, body)
    assert again["state"] == "done" and again["run"] == first["run"]
    assert again["already_saved"] == 2 and again["images_done"] == again["images_total"] == 2
    assert [i["file"] for i in again["images"]] == [i["file"] for i in first["images"]]
    assert call(server.url + "api/info")[2]["queue"]["batches_run"] == batches_before
    assert len(manifest(server.out, first["run"])) == 2


def test_concurrent_jobs_are_packed_into_fewer_batches_than_jobs(server):
    ahead = blocker(server.url, 2)
    bodies = [{"prompt": f"packed {n}", "n_images": 1, "seed": 20 + n} for n in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(lambda body: submit(server.url, body), bodies))
    assert all(job["state"] == "queued" for job in jobs)      # they waited together behind `ahead`
    ends = [finished(server.url, job["id"]) for job in jobs]
    assert all(end["state"] == "done" and len(end["images"]) == 1 for end in ends)
    batches = {image["batch"] for end in ends for image in end["images"]}
    assert len(batches) < len(jobs), batches                  # 4 jobs of 1 image: 1 batch when max_batch=4
    assert [end["batches"] for end in ends] == [[image["batch"]] for end in ends for image in end["images"]]
    assert finished(server.url, ahead["id"])["state"] == "done"


def test_a_client_that_goes_away_loses_no_image(server):
    ahead = blocker(server.url, 4)
    job = submit(server.url, {"prompt": "left behind", "n_images": 3, "seed": 40})
    stream = events(f"{server.url}api/jobs/{job['id']}/events")
    assert next(stream)[0] == "queued"
    stream.close()                                          # the client leaves mid-job
    parts = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("POST", "/generate", json.dumps({"text": "gave up waiting", "num_images": 2}),
                       {"Content-Type": "text/plain;charset=UTF-8", "Bypass-Tunnel-Reminder": "go"})
    waiting = lambda: [run["name"] for run in call(server.url + "api/runs?limit=5")[2]["runs"]
                       if run["prompts"] == ["gave up waiting"]]
    (run,) = wait_for(waiting, every=0.2)                   # its job is queued: the page waits for it
    connection.close()                                      # and its tab is closed
    end = finished(server.url, job["id"])
    assert end["state"] == "done" and len(manifest(server.out, end["run"])) == 3
    assert all((server.out / end["run"] / image["file"]).is_file() for image in end["images"])
    entries = wait_for(lambda: len(manifest(server.out, run)) == 2 and manifest(server.out, run), every=0.2)
    assert all((server.out / run / entry["file"]).is_file() for entry in entries)
    assert finished(server.url, ahead["id"])["state"] == "done"


def test_the_playground_request_and_its_preflight(server):
    status, headers, _ = call(server.url + "generate", method="OPTIONS", headers={
        "Origin": PLAYGROUND, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "bypass-tunnel-reminder"})
    assert status in (200, 204)
    assert headers["access-control-allow-origin"] == PLAYGROUND
    assert "POST" in headers["access-control-allow-methods"]
    assert "bypass-tunnel-reminder" in headers["access-control-allow-headers"].lower()
    status, headers, _ = call(server.url, headers={"Origin": PLAYGROUND, "Bypass-Tunnel-Reminder": "go"})
    assert status == 200 and headers["access-control-allow-origin"] == PLAYGROUND
    for route in ("generate", "dalle"):
        # As the playground's fetch() sends it: a JSON string body (so text/plain) and its header.
        body = json.dumps({"text": "a lighthouse", "num_images": 2}).encode()
        status, headers, answer = call(server.url + route, body, headers={
            "Content-Type": "text/plain;charset=UTF-8", "Bypass-Tunnel-Reminder": "go", "Origin": PLAYGROUND})
        assert status == 200, answer
        assert headers["access-control-allow-origin"] == PLAYGROUND
        assert answer["generatedImgsFormat"] == "jpeg" and len(answer["generatedImgs"]) == 2
        assert all(base64.b64decode(image)[:2] == b"\xff\xd8" for image in answer["generatedImgs"])
    status, headers, answer = call(server.url + "api/jobs", method="OPTIONS", headers={
        "Origin": PLAYGROUND, "Access-Control-Request-Method": "POST"})
    assert status == 403 and "access-control-allow-origin" not in headers and answer["field"] == "origin"
    status, headers, _ = call(server.url + "api/info", headers={"Origin": "https://elsewhere.example"})
    assert status == 200 and "access-control-allow-origin" not in headers


@pytest.mark.parametrize("body, status, field", [
    (b'{"prompts": ["a cat"', 400, "body"),
    (b'{"prompts": ["' + b"x" * 70_000 + b'"]}', 413, "body"),
    ({"prompts": ["a cat"], "n_images": 17}, 400, "n_images"),
    ({"prompts": ["a cat", "a dog"], "n_images": 9}, 400, "n_images"),
    ({"prompts": ["a cat"], "n_images": "two"}, 400, "n_images"),
    ({"prompts": ["x" * 301]}, 400, "prompts[0]"),
    ({"prompts": ["a cat", "  "]}, 400, "prompts[1]"),
    ({"prompts": []}, 400, "prompts"),
    ({"n_images": 1}, 400, "prompts"),
    ({"promts": ["a cat"]}, 400, "promts"),
    ({"prompt": "a cat", "seed": -1}, 400, "seed"),
    ({"prompt": "a cat", "temperature": 0}, 400, "temperature"),
    ({"prompt": "a cat", "top_k": 0}, 400, "top_k"),
    ({"prompt": "a cat", "top_p": 1.5}, 400, "top_p"),
    ({"prompt": "a cat", "top_k": 3e9}, 400, "top_k"),
    ({"prompt": "a cat", "top_k": 2.5}, 400, "top_k"),
    ({"prompt": "a cat", "temperature": 1e300}, 400, "temperature"),
    ({"prompt": "a cat", "condition_scale": 1e12}, 400, "condition_scale"),
    ({"prompts": ["a cat"] * 17}, 400, "prompts"),
    ({"prompt": "a cat", "condition_scale": "high"}, 400, "condition_scale"),
    ({"prompt": "a cat", "negative_prompt": 3}, 400, "negative_prompt"),
    ({"vary": {"image": "../../etc/passwd", "keep_rows": 8}}, 400, "vary.image"),
    ({"vary": {"image": "no-such-run/x.png"}}, 404, "vary.image"),
    ({"extend": {"image": "a/b.png", "direction": "up"}}, 400, "extend.direction"),
    ({"fill": {"image": "a/b.png", "region": [0, 0, 20, 4]}}, 400, "fill.region"),
    ({"vary": {"image": "a/b.png"}, "fill": {"image": "a/b.png", "region": [0, 0, 4, 4]}}, 400, "fill"),
    ([1, 2], 400, "body"),
])
def test_bad_input_is_refused_naming_the_field(server, body, status, field):
    answer_status, _, answer = call(server.url + "api/jobs", body)
    assert answer_status == status, answer
    assert answer["field"] == field
    assert field.split(".")[-1].split("[")[0] in answer["error"].lower()


def test_the_playground_route_names_its_fields_too(server):
    for body, field in ((b'{"num_images": 1}', "text"), (b'{"text": "a", "num_images": 0}', "num_images"),
                        (b"not json", "body")):
        status, _, answer = call(server.url + "generate", body, headers={"Content-Type": "text/plain"})
        assert status == 400 and answer["field"] == field and field in answer["error"].lower()


def test_no_request_reads_outside_the_output_folder(server):
    secret = server.out.parent / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    done = finished(server.url, submit(server.url, {"prompt": "a key", "n_images": 1, "seed": 50})["id"])
    run, file = done["run"], done["images"][0]["file"]
    assert call(f"{server.url}api/images/{run}/{file}")[0] == 200
    for path in (f"/api/images/{run}/../secret.png", f"/api/images/{run}/..%2fsecret.png",
                 "/api/images/..%2F..%2F/secret.png", f"/api/images/%2e%2e/{run}",
                 f"/api/images/{run}/manifest.jsonl", f"/api/images/{run}/run.json",
                 f"/api/images/{run}/%2e{file}", f"/api/images/..%5c{run}/{file}",
                 f"/api/images/{run}/{file}%00.png"):
        status, answer = raw_get(server.url, path)
        assert status in (400, 404), path
    for reference in ("../secret.png", f"{run}/../../secret.png", f"../{run}/{file}", f"{run}/.hidden.png"):
        status, _, answer = call(server.url + "api/jobs", {"vary": {"image": reference}})
        assert status in (400, 404) and answer["field"] == "vary.image", reference
    for name in ("..", "../out", "/etc", ".", f"{run}/.."):
        status, _, answer = call(server.url + "api/rerank", {"run": name})
        assert status in (400, 404) and answer["field"] == "run", name


def test_variations_and_extensions_start_from_a_saved_image(server):
    source = finished(server.url, submit(server.url, {"prompt": "a tower", "n_images": 1, "seed": 60})["id"])
    reference = f"{source['run']}/{source['images'][0]['file']}"
    vary = submit(server.url, {"vary": {"image": reference, "keep_rows": 8}, "n_images": 2, "seed": 61})
    extend = submit(server.url, {"extend": {"image": reference, "direction": "right", "rows": 4}, "seed": 62})
    vary, extend = finished(server.url, vary["id"]), finished(server.url, extend["id"])
    assert vary["state"] == extend["state"] == "done" and len(vary["images"]) == 2
    entries = manifest(server.out, vary["run"])
    assert {e["prompt"] for e in entries} == {"a tower"}
    assert {e["source"]["edit"] for e in entries} == {"vary"}
    kept = read_png_metadata(server.out / vary["run"] / entries[0]["file"])
    original = read_png_metadata(server.out / reference)
    assert kept["tokens"][:8 * 16] == original["tokens"][:8 * 16]          # the first 8 rows are kept
    extended_entry = manifest(server.out, extend["run"])[0]
    assert extended_entry["source"]["direction"] == "right"
    extended_png = server.out / extend["run"] / extended_entry["file"]
    extended = np.reshape(read_png_metadata(extended_png)["tokens"], (16, 16))
    source_grid = np.reshape(original["tokens"], (16, 16))
    np.testing.assert_array_equal(extended[:, :12], source_grid[:, 4:])     # moved left by 4 columns, kept
    # The source recorded by the name /api/runs gives it, and listed with the edit's images.
    assert extended_entry["source"]["file"] == reference and entries[0]["source"]["file"] == reference
    listed = {run["name"]: run for run in call(server.url + "api/runs?limit=1000")[2]["runs"]}
    source_file, url = source["images"][0]["file"], f"/api/images/{reference}"
    (piece,) = listed[extend["run"]]["images"]
    assert piece["edited_from"] == {"run": source["run"], "file": source_file, "edit": "extend",
                                    "direction": "right", "rows": 4, "url": url}
    varied = {"run": source["run"], "file": source_file, "edit": "vary", "direction": None, "rows": 8,
              "url": url}
    assert [image["edited_from"] for image in listed[vary["run"]]["images"]] == [varied] * 2
    assert [image["edited_from"] for image in listed[source["run"]]["images"]] == [None]
    # A record that names a path out of the output folder (or anything but a listed image) is ignored.
    hostile = server.out / "2000-01-02_000000_hostile"        # old: last in the list, and in no one's way
    hostile.mkdir()
    (hostile / "run.json").write_text(json.dumps({"prompts": ["a tower"], "created": "2000-01-02T00:00:00"}))
    names = [reference, f"../{server.out.name}/{reference}", f"{source['run']}/../{source_file}",
             f"../{source_file}", f"{server.out}/{reference}", f"{source['run']}/no-such.png"]
    lines = []
    for index, name in enumerate(names):
        entry = {**extended_entry, "image_index": index, "file": f"{index:03d}.png",
                 "source": {**extended_entry["source"], "file": name}}
        (hostile / entry["file"]).write_bytes(extended_png.read_bytes())
        lines.append(json.dumps(entry))
    (hostile / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    runs = call(server.url + "api/runs?limit=1000")[2]["runs"]
    (run,) = [run for run in runs if run["name"] == hostile.name]
    assert [image["file"] for image in run["images"]] == [f"{index:03d}.png" for index in range(len(names))]
    taken = [image["edited_from"] is not None for image in run["images"]]
    assert taken == [True] + [False] * (len(names) - 1)
    # Made again in this process from the PNGs alone: the same tokens (the README's contract).
    from conftest import tiny_pipeline

    from nbkit.output.reproduction import reproduce

    pipe = tiny_pipeline(max_batch=4)
    for run, entry in [(vary["run"], entries[0]), (vary["run"], entries[1]), (extend["run"], extended_entry)]:
        again = reproduce(pipe, server.out / run / entry["file"])
        assert again.tokens_match, (entry["file"], again.tokens_differing)


def test_an_error_inside_generation_fails_only_that_job(server):
    # An image whose recorded tokens do not fit this VQGAN (codes 0–63): the worker refuses to draw from it.
    broken = server.out / "2000-01-01_000000_broken"
    broken.mkdir()
    (broken / "run.json").write_text(json.dumps({"prompts": ["broken"], "created": "2000-01-01T00:00:00"}))
    metadata = {"prompt": "broken", "prompt_index": 0, "image_index": 0, "seed": 1, "model": "x",
                "tokens": [100] * 256}
    (broken / "broken.png").write_bytes(png_bytes(np.zeros((256, 256, 3), np.uint8), metadata))
    (broken / "manifest.jsonl").write_text(json.dumps({"file": "broken.png", **metadata}) + "\n")
    ahead = blocker(server.url, 5)
    bad = submit(server.url, {"vary": {"image": f"{broken.name}/broken.png"}, "seed": 70})
    good = submit(server.url, {"prompt": "still served", "seed": 71})      # packed with `bad` at first
    bad, good = finished(server.url, bad["id"]), finished(server.url, good["id"])
    assert bad["state"] == "failed" and "\n" not in bad["error"] and "Kept tokens" in bad["error"]
    assert not (server.out / bad["run"]).exists()          # a run that got no image leaves no folder
    assert good["state"] == "done" and len(good["images"]) == 1
    assert finished(server.url, ahead["id"])["state"] == "done"


def test_rerank_scores_a_run_with_clip(server):
    done = finished(server.url, submit(server.url, {"prompt": "a chair", "n_images": 3, "seed": 80})["id"])
    status, _, answer = call(server.url + "api/rerank", {"run": done["run"]})
    assert status == 200, answer
    (group,) = answer["ranking"]
    assert group["prompt"] == "a chair" and len(group["images"]) == 3
    from PIL import Image

    from nbkit.output.rerank import Reranker

    # The scores, recomputed here (the server sorted them: its order proves nothing by itself).
    reranker = Reranker.from_folder(TINY_MODELS[5])
    files = [image["file"] for image in group["images"]]
    pictures = [Image.open(server.out / done["run"] / name).convert("RGB") for name in files]
    expected = reranker.scores(pictures, ["a chair"] * len(files))
    scores = np.array([image["score"] for image in group["images"]])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)      # float32 scores
    assert list(np.argsort(-expected, kind="stable")) == list(range(len(files)))
    assert all(image["url"].startswith("/api/images/") for image in group["images"])
    assert (server.out / done["run"] / "ranking.json").is_file()
    assert call(server.url + "api/rerank", {"run": "no-such-run"})[0] == 404


def test_runs_lists_the_newest_first_and_unknown_addresses_answer_json(server):
    runs = call(server.url + "api/runs")[2]["runs"]
    created = [run["created"] for run in runs if run["created"]]
    assert runs and created == sorted(created, reverse=True)
    assert all(image["url"] == f"/api/images/{run['name']}/{image['file']}" for run in runs
               for image in run["images"])
    for limit in ("²", "٣", "-1", "0", "1e3", "9" * 12, ""):
        status, _, answer = call(server.url + "api/runs?limit=" + urllib.parse.quote(limit))
        assert status == 400 and answer["field"] == "limit", limit
    status, _, answer = call(server.url + "api/nothing")
    assert status == 404 and "error" in answer
    assert call(server.url + "api/jobs/unknown")[0] == 404


# ---- servers of their own


def test_a_token_guards_every_route(tmp_path):
    with running_server(tmp_path, "--host", "0.0.0.0", "--max-queue", "1") as server:
        token = server.url.rstrip("/").rsplit("/t/", 1)[1]
        assert len(token) >= 16 and token in server.messages()      # made and printed
        bare = server.url.split("/t/")[0] + "/"
        for path in ("", "api/info", "api/runs", "static/index.html"):
            status, _, answer = call(bare + path)
            assert status == 401 and answer["field"] == "token", path
        assert call(bare + "t/wrong-token-123/api/info")[0] == 403
        assert call(bare + "api/info", headers={"Authorization": "Bearer nope-nope-nope"})[0] == 403
        assert call(bare + "api/info", headers={"Authorization": f"Bearer {token}"})[0] == 200
        assert call(server.url + "api/info")[0] == 200
        status, _, page = call(bare + f"t/{token}", headers={"Bypass-Tunnel-Reminder": "go"})
        assert status == 200 and b"<" in page                     # what the playground checks
        first = submit(server.url, {"prompt": "a lone job", "n_images": 2, "seed": 90})
        end = finished(server.url, first["id"])
        assert end["state"] == "done"
        assert all(image["url"].startswith(f"/t/{token}/api/images/") for image in end["images"])
        assert call(bare + end["images"][0]["url"].lstrip("/"))[0] == 200
        assert call(bare + end["images"][0]["url"].split(f"/t/{token}/")[1])[0] == 401
        after = submit(server.url, {"prompt": "room again", "seed": 92})
        assert finished(server.url, after["id"])["state"] == "done"
    assert server.process.returncode in (0, 130)


def test_kill_9_mid_batch_then_the_same_request_makes_only_the_missing_images(tmp_path):
    out = tmp_path / "out"
    body = {"prompts": ["first of many", "second of many"], "n_images": 8, "seed": 100}
    server = start_server(tmp_path, "--max-batch", "1", out=out)
    try:
        job = submit(server.url, body)
        wait_for(lambda: status_of(server.url, job["id"])["images_done"] >= 2)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(30)
    finally:
        stop_server(server)
    folder = out / job["run"]
    entries = manifest(out, job["run"])
    assert 2 <= len(entries) < 16
    pngs = sorted(p.name for p in folder.glob("*.png") if not p.name.startswith("."))
    assert pngs == sorted(e["file"] for e in entries)                # no partial file left as an image
    for name in pngs:
        assert read_png_metadata(folder / name)["seed"] == 100

    restarted = start_server(tmp_path, "--max-batch", "4", out=out)
    try:
        again = submit(restarted.url, body)
        assert again["run"] == job["run"] and again["already_saved"] == len(entries)
        end = finished(restarted.url, again["id"])
        assert end["state"] == "done" and end["images_done"] == 16
        made_now = [image for image in end["images"] if image["batch"] is not None]
        assert len(made_now) == 16 - len(entries)
        # Ctrl-C during a batch: that batch is finished and saved, the rest of the job is not made.
        interrupted = submit(restarted.url, {"prompt": "stopped midway", "n_images": 16, "seed": 101})
        seen = wait_for(lambda: status_of(restarted.url, interrupted["id"])["images_done"])
    finally:
        assert stop_server(restarted) == 130, restarted.messages()
    saved = len(manifest(out, interrupted["run"]))
    assert seen <= saved < 16 and saved % 4 == 0
    final = manifest(out, job["run"])
    assert sorted((e["prompt_index"], e["image_index"]) for e in final) == \
        [(p, i) for p in range(2) for i in range(8)]
    images = sorted(p.name for p in folder.glob("*.png")
                    if not p.name.startswith(".") and "_grid" not in p.name)
    assert images == sorted(e["file"] for e in final)
    # the run writer's grids, one per prompt, made when the job was done (the CLI's and the form's too)
    grids = sorted(p.name for p in folder.glob("*_grid*.png"))
    assert [name[:3] for name in grids] == ["000", "001"]


def test_colab_serve_runs_in_this_process_and_stops(tmp_path, capsys):
    from nbkit import colab

    model, vqgan = TINY_MODELS[1], TINY_MODELS[3]
    handle = colab.serve(model=model, vqgan=vqgan, clip=None, port=0, out=tmp_path / "out")
    try:
        status, _, info = call(handle.url + "api/info")
        assert status == 200 and info["model"] == model and info["clip"] is None
    finally:
        handle.stop()
    assert handle.url in capsys.readouterr().out                  # outside Colab: a plain link
    with pytest.raises(OSError):
        call(handle.url + "api/info", timeout=5)


# ---- an in-process server whose batches wait for the test (no races with the worker)


@pytest.fixture(scope="module")
def tiny_pipe():
    from conftest import tiny_pipeline
    return tiny_pipeline(max_batch=4)


@pytest.fixture
def gated(tiny_pipe, tmp_path):
    from tests.server_process import gated_server
    with gated_server(tiny_pipe, tmp_path / "out", max_queue=4) as (running, runner):
        yield running, runner


def raw_call(url: str, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, dict, object]:
    """A request with exactly these headers (Host included): http.client adds none of its own."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        raw = response.read()
        kind = response.getheader("content-type", "")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            json.loads(raw) if kind.startswith("application/json") else raw
    finally:
        connection.close()


def test_identical_requests_while_queued_share_a_job_that_one_cancel_does_not_end(gated):
    running, runner = gated
    ahead = submit(running.url, {"prompt": "ahead", "n_images": 4, "seed": 1})
    assert runner.wait_started() == 4                          # held: the next jobs stay queued
    body = {"prompt": "wanted twice", "n_images": 2, "seed": 2}
    first, second = submit(running.url, body), submit(running.url, body)
    assert first["id"] == second["id"] and second["state"] == "queued" and second["clients"] == 2
    status, _, after_one = call(f"{running.url}api/jobs/{first['id']}/cancel", {})
    assert status == 200 and after_one["state"] == "queued" and after_one["clients"] == 1
    runner.open()
    end = finished(running.url, first["id"])
    assert end["state"] == "done" and len(end["images"]) == 2
    assert finished(running.url, ahead["id"])["state"] == "done"


def test_an_identical_request_while_running_joins_and_while_cancelling_starts_anew(gated):
    running, runner = gated
    body = {"prompt": "in flight", "n_images": 2, "seed": 3}
    job = submit(running.url, body)
    assert runner.wait_started() == 2
    joined = submit(running.url, body)
    assert joined["id"] == job["id"] and joined["state"] == "running" and joined["clients"] == 2
    call(f"{running.url}api/jobs/{job['id']}", method="DELETE")
    status, _, last = call(f"{running.url}api/jobs/{job['id']}/cancel", {})
    assert status == 200 and last["clients"] == 0             # both gave up: it is being cancelled
    anew = submit(running.url, body)                          # never handed the cancelled job
    assert anew["id"] != job["id"] and anew["run"] == job["run"]
    runner.open()
    assert finished(running.url, job["id"])["state"] == "cancelled"
    end = finished(running.url, anew["id"])
    assert end["state"] == "done" and end["images_done"] == end["images_total"] == 2


def test_a_job_cancelled_before_its_first_image_leaves_no_run_folder(gated):
    running, runner = gated
    ahead = submit(running.url, {"prompt": "ahead", "n_images": 4, "seed": 5})
    assert runner.wait_started() == 4                          # held: the next job stays queued
    body = {"prompt": "given up", "n_images": 2, "seed": 6}
    queued = submit(running.url, body)
    assert (running.options.out / queued["run"] / "run.json").is_file()    # named at once, for the page
    status, _, answer = call(f"{running.url}api/jobs/{queued['id']}", method="DELETE")
    assert status == 200 and answer["state"] == "cancelled"
    assert not (running.options.out / queued["run"]).exists()
    runner.open()
    assert finished(running.url, ahead["id"])["state"] == "done"
    again = finished(running.url, submit(running.url, body)["id"])     # the index forgot the removed one
    assert again["state"] == "done" and len(manifest(running.options.out, again["run"])) == 2


def test_cancel_drops_only_the_images_not_yet_started(gated):
    running, runner = gated
    job = submit(running.url, {"prompt": "cut short", "n_images": 12, "seed": 4})
    assert runner.wait_started() == 4                          # the first batch of 4 is in flight
    status, _, answer = call(f"{running.url}api/jobs/{job['id']}", method="DELETE")
    assert status == 200 and answer["state"] == "running"
    runner.open()
    end = finished(running.url, job["id"])
    assert end["state"] == "cancelled" and end["images_done"] == 4
    assert len(manifest(running.options.out, end["run"])) == 4


def test_a_full_queue_answers_429_with_the_work_ahead(gated):
    running, runner = gated
    jobs = [submit(running.url, {"prompt": f"filler {n}", "n_images": 4 + n, "seed": 10 + n})
            for n in range(4)]
    runner.wait_started()
    status, headers, answer = call(running.url + "api/jobs", {"prompt": "one too many", "seed": 20})
    assert status == 429 and "full" in answer["error"]
    # Nothing timed yet (the held batch has not ended): the guess per batch, for the oldest job's one batch.
    from nbkit.server.queue.batching import FIRST_BATCH_GUESS_S
    assert int(headers["retry-after"]) == retry_after_seconds(4, 4, FIRST_BATCH_GUESS_S)
    runner.open()
    assert all(finished(running.url, job["id"])["state"] == "done" for job in jobs)
    assert submit(running.url, {"prompt": "room again", "seed": 21})


def test_a_stopping_server_answers_503_and_finishes_the_batch_in_flight(gated):
    running, runner = gated
    job = submit(running.url, {"prompt": "last one", "n_images": 2, "seed": 30})
    runner.wait_started()
    running.queue.stop()
    status, headers, answer = call(running.url + "api/jobs", {"prompt": "too late", "seed": 31})
    assert status == 503 and int(headers["retry-after"]) > 0 and "stopping" in answer["error"]
    runner.open()
    assert running.queue.join(120)
    end = status_of(running.url, job["id"])
    assert end["state"] == "done" and len(manifest(running.options.out, end["run"])) == 2


def test_an_event_stream_that_disconnects_stops_listening(gated):
    running, runner = gated
    submit(running.url, {"prompt": "held", "n_images": 4, "seed": 40})
    runner.wait_started()
    job = submit(running.url, {"prompt": "watched then not", "seed": 41})
    stream = events(f"{running.url}api/jobs/{job['id']}/events")
    assert next(stream)[0] == "queued"
    held = running.queue.get(job["id"])
    assert len(held.listeners) == 1
    stream.close()                                             # the tab is closed
    wait_for(lambda: not held.listeners)
    runner.open()
    assert finished(running.url, job["id"])["state"] == "done"


def test_without_a_token_only_this_machines_names_are_answered(tiny_pipe, tmp_path):
    from tests.server_process import gated_server
    with gated_server(tiny_pipe, tmp_path / "out", allow_hosts=("my-tunnel.example", ".trusted.example")) \
            as (running, runner):
        port = running.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", "my-tunnel.example",
                     "my-tunnel.example:443", "box.trusted.example"):
            assert raw_call(running.url, "GET", "/api/info", headers={"Host": host})[0] == 200, host
        for host in (f"attacker.example:{port}", "attacker.example", "localhost:1", "127.0.0.1",
                     "localhost.attacker.example", "trusted.example.evil"):
            status, _, answer = raw_call(running.url, "GET", "/api/info", headers={"Host": host})
            assert status == 421 and answer["field"] == "host" and "--allow-host" in answer["error"], host


def test_writes_from_other_sites_are_refused(gated):
    running, runner = gated
    runner.open()
    host = f"127.0.0.1:{running.port}"
    body = json.dumps({"prompt": "from elsewhere", "seed": 50}).encode()
    base = {"Host": host, "Content-Type": "application/json"}
    for extra in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                  {"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://saharmor.github.io"},
                  {"Origin": f"http://localhost:{running.port}"}):
        status, _, answer = raw_call(running.url, "POST", "/api/jobs", body, {**base, **extra})
        assert status == 403 and answer["field"] == "origin", extra
        job_id = "x" * 12
        assert raw_call(running.url, "DELETE", f"/api/jobs/{job_id}", None, {**base, **extra})[0] == 403
    status, _, answer = raw_call(running.url, "POST", "/api/jobs", body, {"Host": host, "Content-Type":
                                 "text/plain;charset=UTF-8"})
    assert status == 415 and answer["field"] == "content-type"
    out = running.options.out
    assert not (out.exists() and any(out.iterdir()))          # no run folder for a refused request
    status, _, answer = raw_call(running.url, "POST", "/api/jobs", body,
                                 {**base, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"})
    assert status == 202, answer                               # the server's own page
    assert finished(running.url, answer["id"])["state"] == "done"


def test_the_token_address_without_its_slash_redirects_a_browser(tiny_pipe, tmp_path):
    from tests.server_process import gated_server
    with gated_server(tiny_pipe, tmp_path / "out", token="secret-token-1") as (running, runner):
        host = f"127.0.0.1:{running.port}"
        status, headers, _ = raw_call(running.url, "GET", "/t/secret-token-1",
                                      headers={"Host": host, "Accept": "text/html"})
        assert status == 307 and headers["location"] == "/t/secret-token-1/"
        status, _, page = raw_call(running.url, "GET", "/t/secret-token-1/", headers={"Host": host})
        assert status == 200 and b"<" in page
        status, _, answer = raw_call(running.url, "GET", "/t/other-token-1", headers={"Host": host})
        assert status == 403 and answer["field"] == "token"


def test_rerank_answers_409_when_off_or_busy_and_503_when_clip_cannot_load(tiny_pipe, tmp_path):
    from tests.server_process import gated_server
    with gated_server(tiny_pipe, tmp_path / "a", clip=None) as (running, runner):
        status, _, answer = call(running.url + "api/rerank", {"run": "anything"})
        assert status == 409 and "clip" in answer["error"].lower()
    with gated_server(tiny_pipe, tmp_path / "b", clip=str(tmp_path / "no-clip-here")) as (running, runner):
        runner.open()
        done = finished(running.url, submit(running.url, {"prompt": "a lamp", "seed": 60})["id"])
        status, _, answer = call(running.url + "api/rerank", {"run": done["run"]})
        assert status == 503 and answer["field"] == "clip"
    with gated_server(tiny_pipe, tmp_path / "c") as (running, runner):
        runner.let_go()
        vase = submit(running.url, {"prompt": "a vase", "n_images": 2, "seed": 61})
        done = finished(running.url, vase["id"])
        submit(running.url, {"prompt": "keeps the worker", "n_images": 4, "seed": 62})
        runner.wait_started()                                   # held on the worker
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(call, running.url + "api/rerank", {"run": done["run"]})
            wait_for(lambda: running.queue.info()["reranks_waiting"] == 1)
            status, _, answer = call(running.url + "api/rerank", {"run": done["run"]})
            assert status == 409 and answer["field"] == "run" and "already" in answer["error"]
            runner.open()
            status, _, ranking = first.result(120)
        assert status == 200 and len(ranking["ranking"][0]["images"]) == 2


def test_the_official_dalle_mini_app_gets_images(gated):
    import requests
    from PIL import Image

    running, runner = gated
    runner.open()
    backend_url = running.url.rstrip("/") + "/generate"      # BACKEND_SERVER + "/generate", as app.py
    r = requests.post(backend_url, json={"prompt": "a snowy mountain"})     # exactly as backend.py does
    assert r.status_code == 200, r.text
    answer = r.json()
    assert len(answer["images"]) == running.options.default_images == 4
    pictures = [Image.open(io.BytesIO(base64.b64decode(image))) for image in answer["images"]]
    assert all(picture.format == "PNG" for picture in pictures)
    assert "nbkit" in answer["version"]
    (run,) = [p for p in running.options.out.iterdir() if p.is_dir()]
    entries = manifest(running.options.out, run.name)                # saved like any job: the same files
    assert sorted(base64.b64decode(image) for image in answer["images"]) == \
        sorted((run / entry["file"]).read_bytes() for entry in entries) and len(entries) == 4


def test_a_slow_manifest_read_does_not_hold_up_other_requests(gated, monkeypatch):
    import threading

    from nbkit.server.queue import admission

    running, runner = gated
    runner.open()
    done = finished(running.url, submit(running.url, {"prompt": "already here", "seed": 70})["id"])
    reading, disk = threading.Event(), threading.Event()
    real = admission.saved_images

    def slow_saved_images(folder):                            # a manifest on a slow disk (Drive)
        reading.set()
        assert disk.wait(120)
        return real(folder)

    monkeypatch.setattr(admission, "saved_images", slow_saved_images)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(submit, running.url, {"prompt": "on a slow disk", "seed": 71})
        assert reading.wait(60)
        try:                                                  # answered while that read waits
            assert status_of(running.url, done["id"])["state"] == "done"
            assert call(running.url + "api/info", timeout=30)[0] == 200
        finally:
            disk.set()
        assert finished(running.url, slow.result(60)["id"])["state"] == "done"


def test_two_replicas_take_two_batches_from_one_queue(tiny_pipe, tmp_path):
    """A queue with two replicas has two batches in flight at once."""
    from nbkit.server.queue.admission import JobQueue
    from nbkit.server.replicas.base import ReplicaPool
    from tests.server_process import gated_replica

    runners = [gated_replica(tiny_pipe, "a"), gated_replica(tiny_pipe, "b")]
    queue = JobQueue(ReplicaPool(runners), tmp_path / "out", log=lambda line: None)
    queue.start()
    try:
        from nbkit.generation.request import GenerationRequest
        job = queue.submit(GenerationRequest(["two at once"], 8, 5))
        assert runners[0].wait_started() == runners[1].wait_started() == 4     # both held: 8 in flight
        assert queue.status(job).state == "running"
        runners[0].open()
        runners[1].open()
        wait_for(lambda: queue.status(job).state == "done")
        status = queue.status(job)
        assert status.images_done == 8 and len(status.batches) == 2
        assert sorted((image.prompt_index, image.image_index) for image in status.images) == \
            [(0, i) for i in range(8)]
    finally:
        for runner in runners:
            runner.open()
        queue.stop()
        assert queue.join(120)


def test_host_rules_as_pure_functions():
    from nbkit.server.command import check_hosts
    from nbkit.server.gate import GateRules, host_allowed, same_origin

    rules = GateRules(allow_hosts=check_hosts(["My-Tunnel.example", ".trusted.example", "box.example:8443"]),
                      port=8000)
    allowed = ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "my-tunnel.example", "a.trusted.example:1",
               "box.example:8443")
    refused = ("localhost:8001", "[::1]", "evil.example:8000", "box.example:443", "trusted.example",
               "127.0.0.1:8000:1", "localhost:８０００")
    assert all(host_allowed(host, rules) for host in allowed)
    assert not any(host_allowed(host, rules) for host in refused)
    assert host_allowed("anything.example", GateRules(token="secret-token-1", port=8000))   # the token guards
    assert same_origin("http://localhost:8000", "localhost:8000", rules)
    assert same_origin("https://x.trusted.example", "x.trusted.example", rules)
    assert not same_origin("https://x.trusted.example", "localhost:8000", rules)   # addressable ≠ trusted
    assert not same_origin("http://localhost:8000.evil.example", "localhost:8000", rules)
    for bad in ("https://x.example", "x.example/path", "user@x.example", ""):
        with pytest.raises(ValueError, match="--allow-host"):
            check_hosts([bad])


# ---- upscaling: a job in the same queue


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _one_image(running, runner, seed: int) -> tuple[str, str]:
    """A generated image (run, file), its batch let through the gate."""
    job = submit(running.url, {"prompt": "a small house", "n_images": 1, "seed": seed})
    runner.wait_started()
    runner.let_go()
    done = finished(running.url, job["id"])
    return done["run"], done["images"][0]["file"]


def test_upscale_a_generated_image_over_http(gated):
    running, runner = gated
    run, file = _one_image(running, runner, 70)
    runner.open()
    status, _, job = call(running.url + "api/upscale", {"run": run, "file": file})
    assert status == 202 and job["kind"] == "upscale" and job["source"] == file and job["run"] == run
    seen = list(events(f"{running.url}api/jobs/{job['id']}/events"))
    kinds = [kind for kind, _ in seen]
    assert kinds[-1] == "done" and kinds.count("image") == 1, kinds
    progress = [data for kind, data in seen if kind == "progress"]
    assert progress and progress[-1]["tiles_done"] == progress[-1]["tiles_total"] >= 1
    image = next(data for kind, data in seen if kind == "image")
    assert image["upscaled_from"] == file and image["run"] == run and image["file"] != file
    status, headers, png = call(running.url + image["url"].lstrip("/"))
    assert status == 200 and headers["content-type"] == "image/png"
    from PIL import Image as Pillow
    assert Pillow.open(io.BytesIO(png)).size == (1024, 1024)
    assert Pillow.open(running.options.out / run / file).size == (256, 256)        # never replaced
    metadata = read_png_metadata(png)
    upscaler = running.options.upscaler
    assert metadata["upscaled_from"]["file"] == file
    assert metadata["upscaled_from"]["sha256"] == sha256_of(running.options.out / run / file)
    assert metadata["upscaler"]["name"] == upscaler and metadata["upscaler"]["sha256"] == sha256_of(upscaler)
    listed = next(r for r in call(running.url + "api/runs")[2]["runs"] if r["name"] == run)["images"]
    assert [(i["file"], i["upscaled_from"]) for i in listed] == [(file, None), (image["file"], file)]
    again = submit(running.url, {"prompt": "a small house", "n_images": 1, "seed": 70})
    assert again["state"] == "done" and again["images_total"] == 1       # the copy is no image to make
    status, _, twice = call(running.url + "api/upscale", {"run": run, "file": file})   # saved: not redone
    assert status == 202 and finished(running.url, twice["id"])["images"][0]["file"] == image["file"]


def test_an_upscale_waits_its_turn_counts_toward_the_queue_and_is_cancelled(gated):
    running, runner = gated
    run, file = _one_image(running, runner, 71)
    ahead = submit(running.url, {"prompt": "ahead", "n_images": 4, "seed": 72})
    runner.wait_started()                                       # held: the upscale stays queued
    status, _, job = call(running.url + "api/upscale", {"run": run, "file": file})
    assert status == 202 and job["state"] == "queued" and job["position"] == 2
    same = call(running.url + "api/upscale", {"run": run, "file": file})[2]
    assert same["id"] == job["id"] and same["clients"] == 2
    fillers = [submit(running.url, {"prompt": f"filler {n}", "seed": 73 + n}) for n in range(2)]
    status, headers, answer = call(running.url + "api/jobs", {"prompt": "one too many", "seed": 80})
    assert status == 429 and int(headers["retry-after"]) >= 1                # 4 = ahead, upscale, 2 fillers
    for _ in range(2):
        status, _, cancelled = call(f"{running.url}api/jobs/{job['id']}/cancel", {})
    assert status == 200 and cancelled["state"] == "cancelled"
    runner.open()
    assert all(finished(running.url, j["id"])["state"] == "done" for j in [ahead, *fillers])
    assert [e["file"] for e in manifest(running.options.out, run)] == [file]
    made = sorted(p.name for p in (running.options.out / run).glob("*.png") if "_grid" not in p.name)
    assert made == [file]                                # the cancelled upscale saved nothing


def test_an_upscale_cancelled_while_running_stops_between_windows_and_saves_nothing(gated):
    import threading

    from nbkit.generation.upscale import TileSettings, Upscaler

    running, runner = gated
    run, file = _one_image(running, runner, 75)

    class Held(Upscaler):
        """Holds after its first batch of windows until the test lets it go."""
        started, go = threading.Event(), threading.Event()

        def _run(self, windows):
            result = super()._run(windows)
            self.started.set()
            assert self.go.wait(120)
            return result

    held = Held(running.options.upscaler, settings=TileSettings(tile=64, overlap=16, batch=1)).load()
    running.app.app.state.upscaler = lambda: held
    job = call(running.url + "api/upscale", {"run": run, "file": file})[2]
    assert held.started.wait(120)
    status, _, answer = call(f"{running.url}api/jobs/{job['id']}", method="DELETE")
    assert status == 200 and answer["state"] == "running" and answer["clients"] == 0
    held.go.set()
    end = finished(running.url, job["id"])
    assert end["state"] == "cancelled" and end["images"] == [] and 0 < end["tiles_done"] < end["tiles_total"]
    made = sorted(p.name for p in (running.options.out / run).glob("*.png") if "_grid" not in p.name)
    assert made == [file]                                # the cancelled upscale saved nothing


def test_bad_upscale_requests_are_refused_naming_the_field(gated):
    running, runner = gated
    run, file = _one_image(running, runner, 76)
    folder = running.options.out / run
    (folder / "notes.png").write_bytes(b"not a picture at all")
    with open(folder / "manifest.jsonl", "a") as listing:
        listing.write(json.dumps({"file": "notes.png", "prompt": "x", "prompt_index": 0, "image_index": 1,
                                  "seed": 1, "model": "m"}) + "\n")
    for body, status, field in [({"run": "no-such-run", "file": file}, 404, "run"),
                                ({"run": run, "file": "nope.png"}, 404, "file"),
                                ({"run": run, "file": "run.json"}, 404, "file"),
                                ({"run": run, "file": "notes.png"}, 400, "file"),
                                ({"run": "..", "file": file}, 400, "run"),
                                ({"run": run}, 400, "file"),
                                ({"run": run, "file": file, "scale": 8}, 400, "scale")]:
        answer_status, _, answer = call(running.url + "api/upscale", body)
        assert (answer_status, answer["field"]) == (status, field), (body, answer)
        assert len(answer["error"].splitlines()) == 1

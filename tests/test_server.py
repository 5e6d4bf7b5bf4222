"""`python -m nbkit serve`, tested for real: a server process with the tiny models on 127.0.0.1, called over
HTTP with urllib (and http.client where a request must arrive exactly as written).

Most tests share one server; the token, the full queue and kill -9 need servers of their own.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
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
from nbkit.server.jobs import gather_delay, pack, preview_due, retry_after_seconds
from tests.server_process import TINY_MODELS, running_server, start_server, stop_server

PLAYGROUND = "https://saharmor.github.io"


# ---- calling the server


def call(url: str, body=None, method: str | None = None, headers: dict | None = None,
         timeout: float = 60) -> tuple[int, dict, object]:
    """(status, headers, JSON or bytes) for any answer, 4xx and 5xx included."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, headers or {}, method=method)
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


def finished(server_url: str, job_id: str, timeout: float = 90) -> dict:
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
    with running_server(tmp_path_factory.mktemp("server"), "--max-queue", "8", "--max-images", "16",
                        "--max-batch", "4") as running:
        yield running
    assert running.process.returncode in (0, 130), running.messages()


# ---- packing, as a pure function


def test_pack_takes_the_head_of_the_queue_while_the_settings_agree():
    a, b = ("settings a",), ("settings b",)
    assert pack([(a, 2, False), (a, 2, False), (a, 2, False), (a, 2, False)], 8) == [2, 2, 2, 2]
    assert pack([(a, 3, False), (a, 3, False), (a, 3, False)], 8) == [3, 3, 2]
    assert pack([(a, 2, False), (b, 2, False), (a, 2, False)], 8) == [2]       # nobody is overtaken
    assert pack([(a, 0, False), (b, 2, False), (b, 9, False)], 8) == [0, 2, 6]
    assert pack([(a, 2, True), (a, 2, False)], 8) == [2]                      # runs alone after a failure
    assert pack([(a, 2, False), (a, 2, True)], 8) == [2]
    assert pack([(a, 20, False)], 8) == [8]


def test_an_idle_worker_waits_briefly_for_jobs_arriving_together():
    assert gather_delay(10.0, 10.0, 10.0, batch_full=False) == pytest.approx(0.05)
    assert gather_delay(10.0, 9.9, 9.9, batch_full=False) == 0.0            # quiet for long enough
    assert gather_delay(10.0, 10.0, 10.0, batch_full=True) == 0.0           # nothing more fits
    assert gather_delay(10.0, 10.0, 9.52, batch_full=False) == pytest.approx(0.02)   # capped at 0.5 s
    assert gather_delay(10.0, 10.0, 9.4, batch_full=False) == 0.0


def test_previews_are_decoded_first_once_a_batch_then_within_a_share_of_its_time():
    assert preview_due(0, 0.0, 0.1)
    assert preview_due(1, 0.2, 1.0) and not preview_due(1, 7.5, 20.0)


def test_retry_after_is_about_one_batch_and_at_least_a_second():
    assert retry_after_seconds(0.2) == 1
    assert retry_after_seconds(12.5) == 13


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


def test_cancel_drops_only_the_images_not_yet_started(server):
    ahead = blocker(server.url, 3)
    waiting = submit(server.url, {"prompt": "never made", "n_images": 4, "seed": 30})
    status, _, cancelled = call(f"{server.url}api/jobs/{waiting['id']}/cancel", b"", method="POST")
    assert status == 200 and cancelled["state"] == "cancelled" and cancelled["images"] == []
    running = submit(server.url, {"prompt": "cut short", "n_images": 16, "seed": 31})
    wait_for(lambda: status_of(server.url, running["id"])["images_done"] >= 1)
    status, _, answer = call(f"{server.url}api/jobs/{running['id']}", method="DELETE")
    assert status == 200
    end = finished(server.url, running["id"])
    assert end["state"] == "cancelled" and 1 <= end["images_done"] < 16
    assert len(manifest(server.out, end["run"])) == end["images_done"]
    assert manifest(server.out, waiting["run"]) == []
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
    ({"prompt": "a cat", "condition_scale": "high"}, 400, "condition_scale"),
    ({"prompt": "a cat", "negative_prompt": 3}, 400, "negative_prompt"),
    ({"vary": {"image": "../../etc/passwd", "keep_rows": 8}}, 400, "vary.image"),
    ({"vary": {"image": "no-such-run/x.png"}}, 404, "vary.image"),
    ({"extend": {"image": "a/b.png", "direction": "up"}}, 400, "extend.direction"),
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
    assert manifest(server.out, extend["run"])[0]["source"]["direction"] == "right"


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
    assert good["state"] == "done" and len(good["images"]) == 1
    assert finished(server.url, ahead["id"])["state"] == "done"


def test_rerank_scores_a_run_with_clip(server):
    done = finished(server.url, submit(server.url, {"prompt": "a chair", "n_images": 3, "seed": 80})["id"])
    status, _, answer = call(server.url + "api/rerank", {"run": done["run"]})
    assert status == 200, answer
    (group,) = answer["ranking"]
    assert group["prompt"] == "a chair" and len(group["images"]) == 3
    scores = [image["score"] for image in group["images"]]
    assert scores == sorted(scores, reverse=True)
    assert all(image["url"].startswith("/api/images/") for image in group["images"])
    assert (server.out / done["run"] / "ranking.json").is_file()
    assert call(server.url + "api/rerank", {"run": "no-such-run"})[0] == 404


def test_runs_lists_the_newest_first_and_unknown_addresses_answer_json(server):
    runs = call(server.url + "api/runs")[2]["runs"]
    created = [run["created"] for run in runs if run["created"]]
    assert runs and created == sorted(created, reverse=True)
    assert all(image["url"] == f"/api/images/{run['name']}/{image['file']}" for run in runs
               for image in run["images"])
    status, _, answer = call(server.url + "api/nothing")
    assert status == 404 and "error" in answer
    assert call(server.url + "api/jobs/unknown")[0] == 404


# ---- servers of their own


def test_a_token_guards_every_route_and_a_full_queue_answers_429(tmp_path):
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
        status, headers, answer = call(server.url + "api/jobs", {"prompt": "one too many", "seed": 91})
        assert status == 429 and int(headers["retry-after"]) >= 1 and "full" in answer["error"]
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
    assert sorted(p.name for p in folder.glob("*.png") if not p.name.startswith(".")) == \
        sorted(e["file"] for e in final)


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

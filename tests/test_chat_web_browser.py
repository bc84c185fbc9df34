"""The chat page in a real browser: headless Chromium (Debian's package) driven by Playwright loads it from
127.0.0.1, sends messages, and sees replies stream in, rendered as markdown; edit, regenerate, new chat, settings,
and the API key prompt. Screenshots are written under pytest's tmp directory."""
import json
import os
import shutil
from pathlib import Path

import pytest

from nanochat.batching import EngineSlots, ScriptedSlots
from nanochat.engine import Engine
from nanochat.scripts.chat_web import byte_tokenizer, tiny_random_model
from nanochat.server import ServerConfig, create_app, serve_in_thread

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOK = byte_tokenizer()
REPLY = "Hello! I am **nanochat**.\n\n- one\n- two\n\n```python\nprint(1 + 1)\n```\nDone."


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"): pytest.fail("Debian's chromium is missing: runs/setup.sh installs it")
        pytest.skip("no chromium: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try: yield b
        finally: b.close()


def scripted_app(**config):
    backend = ScriptedSlots(lambda prompt: TOK.encode(REPLY), slots=4, max_len=4096,
                            stop_token=TOK.encode_special("<|assistant_end|>"), step_s=0.02)  # ~2 s per reply: visibly streamed
    return create_app(backend, TOK, ServerConfig(**config))


def idle(page, timeout=30_000):
    page.wait_for_function("document.body.dataset.state === 'idle' && !document.querySelector('.msg.pending')", timeout=timeout)


def test_the_page_streams_a_reply_and_renders_markdown(browser, tmp_path):
    with serve_in_thread(scripted_app()) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        external = []
        page.on("request", lambda r: external.append(r.url) if not r.url.startswith(url) else None)
        bodies = []
        page.on("request", lambda r: bodies.append(json.loads(r.post_data)) if r.url.endswith("/chat/completions") else None)
        page.goto(url + "/", wait_until="load")
        assert page.title() == "nanochat"
        page.wait_for_selector("#status.ok")
        page.fill("#input", "Hello there")
        page.press("#input", "Enter")
        # streamed: part of the reply is on the page while the request is still running
        page.wait_for_function("document.body.dataset.state === 'busy' && Number(document.querySelector('.msg.assistant')?.dataset.chunks) >= 5")
        partial = page.inner_text(".msg.assistant .content")
        idle(page)
        answer = page.locator(".msg.assistant .content")
        assert len(partial) < len(answer.inner_text())
        assert page.inner_text(".msg.user .content") == "Hello there"
        assert answer.locator("strong").inner_text() == "nanochat"
        assert answer.locator("li").all_inner_texts() == ["one", "two"]
        assert answer.locator(".code pre code").inner_text() == "print(1 + 1)"
        assert int(page.get_attribute(".msg.assistant", "data-chunks")) > 20
        assert "tokens" in page.inner_text(".msg.assistant .meta")
        shot = tmp_path / "chat_web.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        assert bodies[0]["messages"] == [{"role": "user", "content": "Hello there"}]
        assert bodies[0]["temperature"] == 0.8 and bodies[0]["top_k"] == 50  # the settings' defaults

        # settings are sent with the next request; regenerate answers the same question again
        page.click("#settings summary")
        page.fill("#top-k", "7")
        page.eval_on_selector("#temperature", "el => { el.value = '0.3'; el.dispatchEvent(new Event('input')); }")
        page.click("#settings summary")
        page.click(".msg.assistant button.regenerate")
        idle(page)
        assert bodies[-1]["temperature"] == 0.3 and bodies[-1]["top_k"] == 7
        assert bodies[-1]["messages"] == bodies[0]["messages"]
        assert page.locator(".msg").count() == 2

        # a follow-up, then edit the first message: the conversation is cut there and answered again
        page.fill("#input", "And then?")
        page.press("#input", "Enter")
        idle(page)
        assert page.locator(".msg").count() == 4
        assert [m["role"] for m in bodies[-1]["messages"]] == ["user", "assistant", "user"]
        page.locator(".msg.user").first.hover()
        page.locator(".msg.user button.edit").first.click()
        page.fill(".edit-box textarea", "Hi, edited")
        page.click(".edit-box button.save")
        idle(page)
        assert bodies[-1]["messages"] == [{"role": "user", "content": "Hi, edited"}]
        assert page.locator(".msg").count() == 2

        # new chat clears everything
        page.click("#new-chat")
        assert page.locator(".msg").count() == 0
        page.screenshot(path=str(tmp_path / "chat_web_empty.png"))
        assert not external, f"the page fetched from elsewhere: {external}"


def test_stop_keeps_the_partial_answer(browser):
    with serve_in_thread(scripted_app()) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.fill("#input", "Hi")
        page.press("#input", "Enter")
        page.wait_for_function("Number(document.querySelector('.msg.assistant')?.dataset.chunks) >= 3")
        page.click("#send")  # the send button is the stop button while streaming
        idle(page)
        text = page.inner_text(".msg.assistant .content")
        assert 0 < len(text) < len("Hello! I am nanochat.")
        assert not page.is_visible("#error")


def test_the_page_asks_for_the_api_key(browser):
    with serve_in_thread(scripted_app(api_key="s3cret")) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#api-key-label:not([hidden])")  # /health said a key is needed
        page.fill("#input", "Hi")
        page.press("#input", "Enter")
        page.wait_for_selector("#error.show")
        assert "API key" in page.inner_text("#error")
        assert page.locator(".msg").count() == 1  # the question stays, unanswered
        page.fill("#api-key", "s3cret")
        page.click("#send")  # an empty box retries the unanswered question, now with the key
        idle(page)
        assert page.locator(".msg").count() == 2
        assert "nanochat" in page.inner_text(".msg.assistant .content")
        assert not page.is_visible("#error")


def test_a_real_model_behind_the_page(browser, tmp_path):
    backend = EngineSlots(Engine(tiny_random_model(TOK), TOK), slots=4, max_len=512)
    with serve_in_thread(create_app(backend, TOK, ServerConfig(max_tokens=24))) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#status.ok")
        assert "4 rows" in page.inner_text("#status") or "0/4 rows" in page.inner_text("#status")
        page.fill("#input", "Tell me something")
        page.press("#input", "Enter")
        idle(page)
        assert not page.is_visible("#error")
        assert "tokens" in page.inner_text(".msg.assistant .meta")  # the reply ended with its usage
        page.screenshot(path=str(tmp_path / "chat_web_tiny_random.png"))

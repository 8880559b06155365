"""The command line as a user meets it: help texts, outputs, and one clear line for bad input."""

import json
import struct
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tinyphi3.cli import main
from tinyphi3.cli.info import init_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo")
    init_checkpoint("tiny", directory, seed=0)
    return directory


def run(*args, stdin=None):
    """Run the installed `tinyphi3` entry point as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "tinyphi3.cli", *map(str, args)],
                          input=stdin, capture_output=True, timeout=120)


def assert_one_clear_error(result, fragment):
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err
    assert fragment in err, err
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("command", [["chat"], ["generate"], ["info"], ["init"], ["quantize"],
                                     ["tokenizer", "train"]])
def test_every_help_explains_with_an_example(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_info_describes_without_loading(ckpt):
    result = CliRunner().invoke(main, ["info", "--ckpt", str(ckpt)])
    assert result.exit_code == 0, result.output
    for fragment in ("2 layers, hidden 64", "parameters", "on disk", "fp32", "bf16", "4-bit",
                     "KV cache"):
        assert fragment in result.output


def test_generate_is_deterministic_when_greedy_and_reports_stats(ckpt):
    a = run("generate", "--ckpt", ckpt, "--prompt", "Phi-3 is", "--max-new-tokens", "8", "--stats")
    b = run("generate", "--ckpt", ckpt, "--prompt", "Phi-3 is", "--max-new-tokens", "8")
    assert a.returncode == 0, a.stderr.decode()
    assert a.stdout == b.stdout and a.stdout.strip()
    assert "prefill" in a.stderr.decode() and "tokens/s" in a.stderr.decode()


def test_generate_reads_the_prompt_from_stdin(ckpt):
    a = run("generate", "--ckpt", ckpt, "--prompt", "-", "--max-new-tokens", "5", stdin=b"Hello")
    b = run("generate", "--ckpt", ckpt, "--prompt", "Hello", "--max-new-tokens", "5")
    assert a.returncode == 0 and a.stdout == b.stdout


def test_chat_with_piped_stdin_answers_each_line(ckpt):
    result = run("chat", "--ckpt", ckpt, "--max-new-tokens", "4",
                 stdin="Hi there\n/reset\nWhat is 2+3?\n/exit\nnever read\n".encode())
    assert result.returncode == 0, result.stderr.decode()
    # two answers, each as `generate --chat` writes it for that message alone (the /reset
    # cleared the first), and nothing after /exit; an answer of a random model may hold newlines
    answers = [run("generate", "--ckpt", ckpt, "--max-new-tokens", "4", "--chat", "--prompt",
                   message).stdout for message in ("Hi there", "What is 2+3?")]
    assert result.stdout == b"".join(answers)
    assert "[conversation cleared]" in result.stderr.decode()


def test_chat_names_a_mistyped_command_instead_of_answering_it(ckpt):
    result = run("chat", "--ckpt", ckpt, "--max-new-tokens", "4",
                 stdin="Hi there\n/qiut\nWhat is 2+3?\n".encode())
    assert result.returncode == 0, result.stderr.decode()
    assert len(result.stdout.decode().splitlines()) == 2
    assert "unknown command /qiut. Commands: /help" in result.stderr.decode()


def test_chat_help_lists_the_commands_and_sends_nothing_to_the_model(ckpt):
    result = run("chat", "--ckpt", ckpt, "--max-new-tokens", "4", stdin=b"/help\n")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    for command in ("/help", "/reset", "/exit", "/quit"):
        assert command in result.stderr.decode()


def test_chat_file_puts_a_document_before_the_next_message(ckpt, tmp_path):
    """`/file PATH` (a document of many lines, which piped lines could not carry as one message):
    the next message is the file's text, a blank line, then what was typed; as `generate --chat`
    answers that one message. A missing, binary or too long file is one error line, and the
    session goes on."""
    story = tmp_path / "my story.txt"
    story.write_text("Chapter 1\nZorin is an owl.\n\nChapter 2\nThe river runs.\n")
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"ok\xff\xfe")
    long = tmp_path / "long.txt"
    long.write_text(" ".join(["word"] * 400))
    stdin = (f"/file '{story}'\nWho is Zorin?\n/file {tmp_path / 'none.txt'}\n/file {binary}\n"
             f"/file {long}\n/file\nHi\n")
    result = run("chat", "--ckpt", ckpt, "--max-new-tokens", "4", stdin=stdin.encode())
    assert result.returncode == 0, result.stderr.decode()
    err = result.stderr.decode()
    assert f"[{story}, " in err and "goes before your next message" in err
    assert f"error: no such file: {tmp_path / 'none.txt'}" in err
    assert "is not UTF-8 text (byte 2" in err
    assert "the context of 256 cannot hold it" in err
    assert "usage: /file PATH" in err
    assert "Traceback" not in err
    first = run("generate", "--ckpt", ckpt, "--max-new-tokens", "4", "--chat", "--prompt",
                "Chapter 1\nZorin is an owl.\n\nChapter 2\nThe river runs.\n\nWho is Zorin?")
    assert result.stdout.startswith(first.stdout) and len(result.stdout) > len(first.stdout)


def test_chat_quit_ends_the_session_like_exit(ckpt):
    result = run("chat", "--ckpt", ckpt, "--max-new-tokens", "4", stdin=b"/quit\nnever read\n")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"" and b"unknown command" not in result.stderr


def test_chat_message_past_the_context_keeps_the_session_alive(ckpt):
    long_message = " ".join(["word"] * 400)
    result = run("chat", "--ckpt", ckpt, "--max-new-tokens", "4",
                 stdin=f"{long_message}\nshort one\n".encode())
    assert result.returncode == 0
    assert "the context holds 256" in result.stderr.decode()
    assert len(result.stdout.decode().splitlines()) == 1       # the short one was answered


def test_prompt_past_the_context_is_refused_or_trimmed(ckpt):
    prompt = " ".join(["word"] * 400)
    assert_one_clear_error(run("generate", "--ckpt", ckpt, "--prompt", prompt),
                           "the context holds 256")
    trimmed = run("generate", "--ckpt", ckpt, "--prompt", prompt, "--trim", "--max-new-tokens", "3")
    assert trimmed.returncode == 0
    assert "prompt trimmed: dropped its first" in trimmed.stderr.decode()


def test_missing_checkpoint(tmp_path):
    assert_one_clear_error(run("chat", "--ckpt", tmp_path / "nope"), "not found")
    assert_one_clear_error(run("info", "--ckpt", tmp_path / "nope"), "not found")


def test_corrupt_checkpoint(tmp_path, ckpt):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ckpt.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert_one_clear_error(run("generate", "--ckpt", broken, "--prompt", "x"), "truncated")
    assert_one_clear_error(run("info", "--ckpt", broken), "truncated")
    weights.write_bytes(struct.pack("<Q", 8) + b"not json")
    assert_one_clear_error(run("chat", "--ckpt", broken), "not valid JSON")


def test_inconsistent_config(tmp_path, ckpt):
    broken = tmp_path / "cfg"
    broken.mkdir()
    for f in ckpt.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    config["num_attention_heads"] = 5
    (broken / "config.json").write_text(json.dumps(config))
    assert_one_clear_error(run("info", "--ckpt", broken), "not divisible by num_attention_heads")


def test_missing_tokenizer_file(tmp_path, ckpt):
    broken = tmp_path / "notok"
    broken.mkdir()
    for f in ckpt.iterdir():
        if f.name != "tokenizer.model":
            (broken / f.name).write_bytes(f.read_bytes())
    assert_one_clear_error(run("generate", "--ckpt", broken, "--prompt", "x"), "tokenizer.model")


def test_non_utf8_stdin(ckpt):
    assert_one_clear_error(run("chat", "--ckpt", ckpt, stdin=b"caf\xe9\n"), "not valid UTF-8")
    assert_one_clear_error(run("generate", "--ckpt", ckpt, "--prompt", "-", stdin=b"\xff\xfe"),
                           "not valid UTF-8")


def test_tokenizer_train_command(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 200 + "1 + 2 = 3\n" * 50, encoding="utf-8")
    result = run("tokenizer", "train", "--input", corpus, "--out", tmp_path / "tok",
                 "--vocab-size", "300")
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "tok" / "tokenizer.model").is_file()
    assert (tmp_path / "tok" / "tokenizer_config.json").is_file()
    assert_one_clear_error(run("tokenizer", "train", "--input", tmp_path / "missing.txt",
                               "--out", tmp_path / "t2", "--vocab-size", "300"), "missing.txt")


def test_bad_option_values_are_refused_by_the_parser(ckpt):
    result = run("generate", "--ckpt", ckpt, "--prompt", "x", "--top-p", "1.5")
    assert result.returncode == 2 and b"Traceback" not in result.stderr


def read_until(fd, needle, timeout=60):
    import os
    import select
    import time
    buf, end = b"", time.time() + timeout
    while time.time() < end:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            if needle in buf:
                return buf
    raise AssertionError(f"did not see {needle!r}; got {buf!r}")


def test_interactive_chat_in_a_terminal(ckpt):
    """In a real terminal: a prompt, an answer, Ctrl-C at the prompt gives a fresh prompt,
    Ctrl-D quits with status 0."""
    import os
    import pty
    import time
    pid, fd = pty.fork()
    if pid == 0:                                   # the child becomes `tinyphi3 chat`
        import signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)   # as a shell starts it, whatever the runner
        os.execvp(sys.executable, [sys.executable, "-m", "tinyphi3.cli", "chat", "--ckpt",
                                   str(ckpt), "--max-new-tokens", "5"])
    read_until(fd, b">>> ")
    os.write(fd, b"hello\r")
    assert read_until(fd, b">>> ").count(b"\n") >= 2       # echo, answer line
    # A SIGINT that lands between the prompt being drawn and readline starting to wait for keys
    # is only noticed at the next key (CPython's readline loop); a person never types that fast.
    time.sleep(2.0)
    os.write(fd, b"\x03")                                  # Ctrl-C
    try:
        seen = read_until(fd, b">>> ", timeout=15)
    except AssertionError:                                 # not noticed: pressed again
        os.write(fd, b"\x03")
        seen = read_until(fd, b">>> ")
    assert b"use /exit or Ctrl-D to quit" in seen
    os.write(fd, b"\x04")                                  # Ctrl-D
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_ctrl_c_while_answering_stops_the_answer_and_keeps_the_session(ckpt, monkeypatch, capsys):
    from tinyphi3.cli import chat as cli
    from tinyphi3.models.model import Phi3
    from tinyphi3.tokenizers.sentencepiece_bpe import Tokenizer
    session = cli.ChatSession(Phi3.from_pretrained(ckpt), Tokenizer.from_pretrained(ckpt), None,
                              {"max_new_tokens": 50, "temperature": 0.0, "top_k": None,
                               "top_p": None, "seed": None, "stats": False})
    lines = iter(["first", "second"])

    def fake_input(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None
    real_stream = cli.stream_answer

    def interrupted_once(*args):
        if not session.turns and not interrupted_once.done:
            interrupted_once.done = True
            raise KeyboardInterrupt
        return real_stream(*args)
    interrupted_once.done = False
    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr(cli, "stream_answer", interrupted_once)
    cli.run_interactive(session)
    assert "[answer interrupted" in capsys.readouterr().err
    assert [t["content"] for t in session.turns if t["role"] == "user"] == ["second"]

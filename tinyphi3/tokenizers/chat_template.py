"""Chat templates: turn a list of messages into the text a chat model was trained on.

Phi-3-mini's published template renders every message as

    <|{role}|>\\n{content}<|end|>\\n

for the roles system, user and assistant, and then ends the prompt with `<|assistant|>\\n` when a
generation prompt is asked for (the model writes the reply next), or with the eos token when the
conversation is complete. A tokenizer directory may carry its own Jinja template
(`chat_template` in tokenizer_config.json, or a chat_template.jinja file); it is rendered here the
way transformers renders it: a sandboxed Jinja environment with `trim_blocks` and `lstrip_blocks`,
and the variables `messages`, `add_generation_prompt`, `tools`, `documents` and the special tokens
(`bos_token`, `eos_token`, `unk_token`, `pad_token`).

Tokenizing a chat needs one more idea. The template's own control tokens (`<|user|>`, `<|end|>`)
must become control ids, but a user who types `<|end|>` must not be able to end their own turn:
message contents are always text. `render_with_placeholders` renders the template with each
content replaced by a unique placeholder, so the control tokens in the result come from the
template alone; `fill_placeholders` puts the contents back into the text between them.
"""
import datetime
import re

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tinyphi3.errors import TokenizerError

# The published Phi-3-mini-4k-instruct template (tokenizer_config.json, "chat_template").
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|assistant|>\n' }}"
    "{% else %}"
    "{{ eos_token }}"
    "{% endif %}"
)

CHAT_ROLES = ("system", "user", "assistant")

# Placeholders are built from a private-use character (U+E000..U+F8FF) that no input contains.
_PRIVATE_USE = range(0xE000, 0xF900)


def check_messages(messages):
    """Raise TokenizerError unless `messages` is a non-empty list of {"role", "content"} dicts.

    A role must be one of CHAT_ROLES and a content must be a string; other keys are passed on to the
    template untouched.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise TokenizerError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, "
                             f"got {messages!r}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise TokenizerError(f"message {i} must be a dict with 'role' and 'content', "
                                 f"got {message!r}")
        if message["role"] not in CHAT_ROLES:
            raise TokenizerError(f"message {i} has role {message['role']!r}; "
                                 f"known roles are {', '.join(CHAT_ROLES)}")
        if not isinstance(message["content"], str):
            raise TokenizerError(f"message {i} has content of type "
                                 f"{type(message['content']).__name__}, not str")


def _raise_exception(message):
    raise TokenizerError(f"chat template error: {message}")


def _strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)


def compile_chat_template(source):
    """Compile a Jinja chat template in the sandbox transformers uses (trim_blocks,
    lstrip_blocks)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateError as err:
        raise TokenizerError(f"chat template does not compile: {err}") from err


def render_chat(template, messages, add_generation_prompt, special_tokens):
    """Render `messages` with a compiled template; `special_tokens` holds eos_token,
    bos_token, ..."""
    check_messages(messages)
    try:
        return template.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            tools=None,
            documents=None,
            **special_tokens,
        )
    except jinja2.TemplateError as err:
        raise TokenizerError(f"chat template failed to render: {err}") from err


def render_with_placeholders(template, messages, add_generation_prompt, special_tokens):
    """Render the chat with each non-empty content replaced by a placeholder.

    Returns (skeleton, contents, mark): placeholder i is `mark + str(i) + mark` and stands for
    contents[i]. Empty contents stay empty, so templates that test `message['content']` behave
    as they do on the real messages.
    """
    check_messages(messages)
    seen = ("".join(m["content"] for m in messages)
            + "".join(str(v) for v in special_tokens.values()))
    mark = next(chr(c) for c in _PRIVATE_USE if chr(c) not in seen)
    contents, masked = [], []
    for message in messages:
        if message["content"]:
            masked.append({**message, "content": f"{mark}{len(contents)}{mark}"})
            contents.append(message["content"])
        else:
            masked.append(dict(message))
    skeleton = render_chat(template, masked, add_generation_prompt, special_tokens)
    return skeleton, contents, mark


def fill_placeholders(text, contents, mark):
    """Put the contents back where `render_with_placeholders` left their placeholders."""
    placeholder = re.compile(f"{re.escape(mark)}(\\d+){re.escape(mark)}")
    return placeholder.sub(lambda m: contents[int(m.group(1))], text)


class ChatTemplateMixin:
    """`apply_chat_template` for a tokenizer class, as transformers renders and tokenizes a chat.

    The class provides `chat_template` (the Jinja source), `template_variables()` (the special
    tokens the template may name), `split_control_tokens(text)` (a list of str and int: text, and
    the id of each control token found in it), `control_token_text(id)` and `encode_parts(parts)`
    (the ids of such a list).
    """

    _template = None                                     # compiled on first use

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        """Render a chat with the directory's template (Phi-3's by default): the text, or with
        tokenize=True its ids, where control ids come from the template and contents are text."""
        if self._template is None:
            self._template = compile_chat_template(self.chat_template)
        variables = self.template_variables()
        text = render_chat(self._template, messages, add_generation_prompt, variables)
        if not tokenize:
            return text
        skeleton, contents, mark = render_with_placeholders(self._template, messages,
                                                            add_generation_prompt, variables)
        parts = [part if isinstance(part, int) else fill_placeholders(part, contents, mark)
                 for part in self.split_control_tokens(skeleton)]
        rendered = "".join(self.control_token_text(p) if isinstance(p, int) else p for p in parts)
        if rendered != text:
            raise TokenizerError("the chat template changes message contents, so its control "
                                 "tokens cannot be told apart from the users' text")
        return self.encode_parts(parts)

"""Server options declared once: typed models whose fields carry their command-line flag.

Every option of a managed server is a field of an options model (`SGLangOptions`,
`qwen_sglang.servers.local.LocalEmbeddingOptions`, ...) annotated with a `Flag`. That one
declaration drives everything else:

- validation: the field's type and constraints (pydantic, strict), refused with a
  `ConfigurationError` that names the option (`parse_options`);
- the child's command line (`render_flags`) and so ``display_command()`` and ``serve --dry-run``;
- the ``qwen-sglang serve`` flags (`add_flags`: the flag is the field's name, ``--tp-size``);
- which options a backend lacks, for ``launch_server(backend="auto")`` (`split_options`);
- the options table of docs/server.md, which a test compares with `SGLangOptions`.

SGLang's own flags change between versions. `FLAG_CHANGES` records, from the wheels' source,
which flags were renamed or removed and since which version; `adapt_argv` rewrites a command line
for the SGLang that will run it (the installed one, read without importing it, or one named), so a
deprecated spelling becomes its replacement where that exists and a flag a version removed is never
passed to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from qwen_sglang.errors import ConfigurationError

__all__ = [
    "CONFIG_FILE_SINCE",
    "FLAG_CHANGES",
    "NEWEST_READ",
    "VERIFIED_ON_GPU",
    "WRONG_FLAGS",
    "Flag",
    "FlagChange",
    "SGLangOptions",
    "Version",
    "adapt_argv",
    "add_flags",
    "check_extra_args",
    "installed_sglang_version",
    "option_fields",
    "parse_options",
    "parse_version",
    "render_flags",
    "split_options",
]

logger = logging.getLogger("qwen_sglang.servers")

Version = tuple[int, int, int]
Model = TypeVar("Model", bound=BaseModel)

#: The SGLang versions this project ran its GPU suite on (docs/compatibility.md).
VERIFIED_ON_GPU: tuple[str, ...] = ("0.5.15", "0.5.17")
#: The newest SGLang whose source the facts below were read from (not run: it needs torch 2.14).
NEWEST_READ = "0.5.23"
#: The wheels every flag of this module was checked in (``srt/server_args.py``; 0.5.23:
#: ``srt/arg_groups/fields/*.py``, where a field ``name`` is the flag ``--name``).
READ_IN = "0.5.5, 0.5.12, 0.5.15, 0.5.17, 0.5.23"
#: SGLang reads ``--config FILE.yaml`` from this version (where the API key can travel).
CONFIG_FILE_SINCE: Version = (0, 5, 5)


def parse_version(text: str) -> Version:
    """``"0.5.17"``, ``"0.5.17.post1"`` or ``"0.5.23rc0+cu130"`` as ``(0, 5, 17)`` ...; raises
    `ConfigurationError` for text that does not start with a version."""
    match = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise ConfigurationError(f"not an SGLang version: {text!r} (expected e.g. 0.5.17)")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def installed_sglang_version() -> str | None:
    """The version of the ``sglang`` distribution installed for this Python, read from its
    metadata (sglang itself is not imported: that takes seconds and needs a GPU stack)."""
    try:
        return version("sglang")
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------- flags
FlagKind = Literal["value", "switch", "negated", "json_override"]


@dataclass(frozen=True)
class Flag:
    """How an option field reaches a server's command line (field metadata, next to its type).

    ``kind``: ``"value"`` passes ``FLAG VALUE``; ``"switch"`` passes ``FLAG`` when true;
    ``"negated"`` passes ``FLAG`` when false (``--no-matryoshka``); ``"json_override"`` passes
    ``FLAG '{"is_matryoshka": true}'`` when true; a list as ``FLAG a,b``. Nothing is passed when
    the value is ``None``, an empty list, or equals ``omit`` (the server's own default).
    """

    name: str
    kind: FlagKind = "value"
    omit: Any = None
    read_in: str = ""
    """Where the flag was read (SGLang versions), for the table's readers."""

    def render(self, value: Any) -> list[str]:
        if value is None or (self.omit is not None and value == self.omit):
            return []
        if self.kind == "switch":
            return [self.name] if value else []
        if self.kind == "negated":
            return [] if value else [self.name]
        if self.kind == "json_override":
            return [self.name, json.dumps({"is_matryoshka": True})] if value else []
        if isinstance(value, tuple | list):
            return [self.name, ",".join(str(v) for v in value)] if value else []
        return [self.name, str(value)]


#: A flag that is always passed (``omit`` never equals a value).
ALWAYS = object()


def _flag_of(model: type[BaseModel], name: str) -> Flag:
    flags = [m for m in model.model_fields[name].metadata if isinstance(m, Flag)]
    if not flags:
        raise TypeError(f"{model.__name__}.{name} declares no Flag")  # a programming error
    return flags[0]


def option_fields(model: type[BaseModel]) -> dict[str, Flag]:
    """The options of ``model`` and their flags, in declaration order."""
    return {name: _flag_of(model, name) for name in model.model_fields}


def render_flags(options: BaseModel) -> list[str]:
    """The arguments ``options`` stand for, in declaration order."""
    argv: list[str] = []
    for name, flag in option_fields(type(options)).items():
        argv += flag.render(options.__dict__[name])
    return argv


def parse_options(model: type[Model], options: Mapping[str, Any], *, owner: str) -> Model:
    """``options`` validated as ``model``; a `ConfigurationError` naming each bad option (and,
    for an unknown one, the options there are)."""
    try:
        return model(**options)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            name = ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":
                known = ", ".join(model.model_fields)
                problems.append(f"{owner} has no option {name!r} (its options: {known})")
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(f"{name} {message[:1].lower()}{message[1:]}, got {error['input']!r}")
        raise ConfigurationError("; ".join(problems)) from None


def split_options(model: type[BaseModel], options: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``options`` that are fields of ``model``, and the names of those that are not (sorted)."""
    kept = {k: v for k, v in options.items() if k in model.model_fields}
    return kept, sorted(k for k in options if k not in model.model_fields)


def _positive_or_minus_one(value: int | None) -> int | None:
    if value is not None and value != -1 and value < 1:
        raise ValueError("must be a positive int, or -1 to disable chunking")
    return value


def _cli_type(annotation: Any) -> tuple[Any, list[str] | None]:
    """The argparse ``type`` and ``choices`` of a field annotation (``X | None`` unwrapped)."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        return str, [str(a) for a in get_args(annotation)]
    if get_origin(annotation) is tuple:
        return _comma_list, None
    if annotation in (int, float, str):
        return annotation, None
    return str, None


def add_flags(
    group: argparse._ActionsContainer, models: Iterable[type[BaseModel]], *, skip: Iterable[str] = ()
) -> None:
    """Add one command-line flag per option of ``models`` (the first model to declare a name gives
    its help), named after the field (``tp_size`` → ``--tp-size``), default ``None`` = not given."""
    seen = set(skip)
    for model in models:
        for name, info in model.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            cli = "--" + name.replace("_", "-")
            help_text = (info.description or "").split("\n\n", 1)[0].replace("%", "%%")
            if info.annotation is bool:
                action = argparse.BooleanOptionalAction if info.default else "store_true"
                group.add_argument(cli, action=action, default=None, help=help_text)
                continue
            kind, choices = _cli_type(info.annotation)
            group.add_argument(cli, type=kind, choices=choices, default=None, help=help_text)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(h.strip() for h in text.split(",") if h.strip())


# ----------------------------------------------------------------------------- SGLang's options
def _sglang(name: str, kind: FlagKind = "value", omit: Any = None) -> Flag:
    return Flag(name, kind, omit, READ_IN)


Device = Literal["cuda", "xpu", "hpu", "npu", "cpu", "musa"]


class SGLangOptions(BaseModel):
    """The SGLang options of `qwen_sglang.SGLangServer` and ``qwen-sglang serve``, each with its flag.

    ``--model-path``, ``--is-embedding`` (always), ``--host``, ``--port``,
    ``--served-model-name`` and ``--api-key`` come from the server itself; anything else SGLang
    accepts goes in ``extra_args``.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, use_attribute_docstrings=True)

    tp_size: Annotated[int, Field(ge=1), _sglang("--tp-size", omit=ALWAYS)] = 1
    """Tensor-parallel GPUs per replica (a model too large for one GPU)."""
    dp_size: Annotated[int, Field(ge=1), _sglang("--dp-size", omit=ALWAYS)] = 1
    """Data-parallel replicas inside one server (throughput)."""
    mem_fraction_static: Annotated[float | None, Field(gt=0, lt=1), _sglang("--mem-fraction-static")] = None
    """Share of the GPU's total memory for weights + KV pool, in (0, 1)."""
    attention_backend: Annotated[str | None, _sglang("--attention-backend")] = None
    """Attention kernels: fa3 (Hopper default), flashinfer, triton, torch_native ..."""
    context_length: Annotated[int | None, Field(ge=1), _sglang("--context-length")] = None
    """Most tokens per input."""
    max_running_requests: Annotated[int | None, Field(ge=1), _sglang("--max-running-requests")] = None
    """Most concurrent requests in the scheduler."""
    chunked_prefill_size: Annotated[
        int | None, AfterValidator(_positive_or_minus_one), _sglang("--chunked-prefill-size")
    ] = None
    """Tokens per prefill chunk (-1 disables chunking)."""
    max_prefill_tokens: Annotated[int | None, Field(ge=1), _sglang("--max-prefill-tokens")] = None
    """Tokens in one prefill batch (SGLang's default 16384)."""
    dtype: Annotated[str | None, _sglang("--dtype", omit="auto")] = None
    """Weights and activations: auto (bf16 for Qwen3), bfloat16, float16."""
    matryoshka: Annotated[bool, _sglang("--json-model-override-args", kind="json_override")] = True
    """Allow the 'dimensions' request field (Qwen3-Embedding's config lacks is_matryoshka)."""
    allow_auto_truncate: Annotated[bool, _sglang("--allow-auto-truncate", kind="switch")] = False
    """Let SGLang truncate over-long inputs (drops the end token: prefer the client's long_text)."""
    disable_radix_cache: Annotated[bool, _sglang("--disable-radix-cache", kind="switch")] = False
    """Turn off prefix caching."""
    disable_cuda_graph: Annotated[bool, _sglang("--disable-cuda-graph", kind="switch")] = False
    """No CUDA graphs (faster start; passed as the cuda-graph-backend flags where SGLang has them)."""
    enable_priority_scheduling: Annotated[bool, _sglang("--enable-priority-scheduling", kind="switch")] = True
    """Order the waiting queue by each request's 'priority' (the client's single queries carry one)."""
    device: Annotated[Device | None, _sglang("--device", omit="cuda")] = None
    """cuda (default), or xpu, hpu, npu, cpu, musa."""
    log_level: Annotated[str, _sglang("--log-level", omit=ALWAYS)] = "info"
    """The server's log level."""


#: Flags copied from blog posts that SGLang does not have, with what to use instead.
WRONG_FLAGS: dict[str, str] = {
    "--enable-flashinfer": "it never existed; argparse prefix matching makes it fail or silently "
    "enable --enable-flashinfer-allreduce-fusion. Use attention_backend='flashinfer' "
    "(--attention-backend flashinfer|fa3|triton)",
    "--max-num-batched-tokens": "it is a vLLM flag; SGLang exits with 'unrecognized arguments'. "
    "Use max_prefill_tokens or chunked_prefill_size",
    "--chat-template": "an embedding server needs no chat template, and passing "
    "tokenizer_config.json crashes start-up (KeyError 'sep_style')",
    "--tp": "use tp_size (--tp-size); --tp only works through argparse prefix matching",
}


def check_extra_args(extra_args: Sequence[str], allowed: frozenset[str] = frozenset()) -> list[str]:
    """``extra_args`` as a list of strings; `ConfigurationError` for one string or a `WRONG_FLAGS`
    flag (except the ``allowed`` ones)."""
    if isinstance(extra_args, str):
        raise ConfigurationError("extra_args must be a sequence of arguments, not one string")
    for arg in extra_args:
        flag = str(arg).split("=", 1)[0]
        if flag in WRONG_FLAGS and flag not in allowed:
            raise ConfigurationError(f"{flag}: {WRONG_FLAGS[flag]}")
    return [str(a) for a in extra_args]


# ---------------------------------------------------------------------- flags across versions
@dataclass(frozen=True)
class FlagChange:
    """A flag SGLang deprecated or removed: what stands for it, from which version.

    ``values``: how many arguments follow the flag (``"+"``: one or more). ``replacement``: the
    arguments passed instead, ``{}`` standing for the flag's value(s); ``replaced_from``: the
    first version read that has the replacement (it is used from there on); ``removed_in``: the
    first version read that no longer accepts the flag.
    """

    flag: str
    values: int | Literal["+"]
    replacement: tuple[str, ...] | None
    replaced_from: Version | None
    removed_in: Version | None
    source: str


_CG = "0.5.15: deprecated alias; 0.5.12: no replacement yet; 0.5.23: "
#: What the wheels say (``srt/server_args.py``'s "Deprecated argument registrations"; 0.5.23's
#: ``server_args.py`` keeps only ``--disable-cuda-graph`` of these).
FLAG_CHANGES: tuple[FlagChange, ...] = (
    FlagChange(
        "--disable-cuda-graph",
        0,
        ("--cuda-graph-backend-decode", "disabled", "--cuda-graph-backend-prefill", "disabled"),
        (0, 5, 15),
        None,
        _CG + "still a deprecated alias",
    ),
    FlagChange("--cuda-graph-max-bs", 1, ("--cuda-graph-max-bs-decode", "{}"), (0, 5, 15), (0, 5, 23), _CG + "removed"),
    FlagChange("--cuda-graph-bs", "+", ("--cuda-graph-bs-decode", "{}"), (0, 5, 15), (0, 5, 23), _CG + "removed"),
    FlagChange(
        "--enable-breakable-cuda-graph",
        0,
        ("--cuda-graph-backend-prefill", "breakable"),
        (0, 5, 15),
        (0, 5, 23),
        _CG + "removed",
    ),
    FlagChange(
        "--disable-piecewise-cuda-graph",
        0,
        ("--cuda-graph-backend-prefill", "disabled"),
        (0, 5, 15),
        (0, 5, 23),
        _CG + "removed",
    ),
    FlagChange(
        "--enforce-piecewise-cuda-graph",
        0,
        ("--cuda-graph-backend-prefill", "tc_piecewise"),
        (0, 5, 15),
        (0, 5, 23),
        _CG + "removed",
    ),
    FlagChange(
        "--piecewise-cuda-graph-tokens", "+", ("--cuda-graph-bs-prefill", "{}"), (0, 5, 15), (0, 5, 23), _CG + "removed"
    ),
    FlagChange(
        "--piecewise-cuda-graph-max-tokens",
        1,
        ("--cuda-graph-max-bs-prefill", "{}"),
        (0, 5, 15),
        (0, 5, 23),
        _CG + "removed",
    ),
    FlagChange(
        "--piecewise-cuda-graph-compiler",
        1,
        ("--cuda-graph-tc-compiler", "{}"),
        (0, 5, 15),
        (0, 5, 23),
        _CG + "removed",
    ),
    FlagChange(
        "--stream-output",
        0,
        ("--incremental-streaming-output",),
        (0, 5, 12),
        (0, 5, 23),
        "0.5.12: deprecated alias (0.5.5: no replacement yet); 0.5.23: removed",
    ),
    FlagChange("--torchao-config", 1, None, None, (0, 5, 23), "0.5.17: a field; 0.5.23: removed, no replacement"),
)
_CHANGES = {change.flag: change for change in FLAG_CHANGES}


def _take(argv: Sequence[str], i: int, change: FlagChange) -> tuple[list[str], int]:
    """The values of the flag at ``argv[i]`` (``--flag=v`` or ``--flag v ...``), and the next index."""
    _, eq, inline = argv[i].partition("=")
    if eq:
        return [inline], i + 1
    if change.values == 0:
        return [], i + 1
    if change.values == "+":
        end = i + 1
        while end < len(argv) and not argv[end].startswith("--"):
            end += 1
        return list(argv[i + 1 : end]), end
    return list(argv[i + 1 : i + 1 + change.values]), i + 1 + change.values


def adapt_argv(argv: Sequence[str], sglang_version: str) -> list[str]:
    """``argv`` for SGLang ``sglang_version``: each `FLAG_CHANGES` flag passed as its replacement
    where that version has one, kept where it still works, and refused (`ConfigurationError`,
    before anything starts) where the version removed it without a replacement."""
    at = parse_version(sglang_version)
    out: list[str] = []
    i = 0
    while i < len(argv):
        change = _CHANGES.get(argv[i].split("=", 1)[0])
        if change is None:
            out.append(argv[i])
            i += 1
            continue
        values, i = _take(argv, i, change)
        if change.replacement is not None and change.replaced_from is not None and at >= change.replaced_from:
            new = [v for part in change.replacement for v in (values if part == "{}" else [part])]
            logger.info("SGLang %s: passing %s as %s", sglang_version, change.flag, " ".join(new))
            out += new
        elif change.removed_in is not None and at >= change.removed_in:
            raise ConfigurationError(
                f"{change.flag} was removed in SGLang {'.'.join(map(str, change.removed_in))} with no "
                f"replacement ({change.source}): leave it out for SGLang {sglang_version}"
            )
        else:
            out += [change.flag, *values]
    return out

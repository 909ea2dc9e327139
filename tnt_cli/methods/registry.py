"""Every token-reduction method tnt runs, one record each: the only module that writes a method's name.

A record says what the rest of tnt needs to know about a method without importing torch: its name and aliases,
where its implementation is (a `configure` function, imported when the method runs: it sets the method up at a
GMACs budget and counts its exact MACs), how reports, plots and model cards describe it, and what it can do
(rank with TNT's heads, take a reducer, compile, be drawn by `tnt visualize`, ...). Code elsewhere asks a record
(`lookup(name).uses_heads`) instead of comparing names, so adding a method is one module with a `configure`
function plus one line in `REGISTRY`.

`tnt` is the paper's method and the reference: a schedule is TNT's, and every other method runs at the GMACs
closest to TNT's at that schedule. `dense` reduces nothing (the zero-pruning end of TNT's curve).
"""

from __future__ import annotations

from dataclasses import dataclass

from tnt_cli.errors import TntError


@dataclass(frozen=True)
class Method:
    """One method, as the rest of tnt sees it."""

    name: str
    configure: str  # "module:function" that sets it up at a budget (see tnt_cli.methods.apply.Configure)
    label: str  # tables and plots: "ToMe"
    card: str  # model cards: "token merging (ToMe)"
    style: tuple[str, str] = ("black", "o")  # plot colour and marker
    aliases: tuple[str, ...] = ()
    reduces: bool = True  # False: dense (nothing to fine-tune, sweep or time against TNT)
    uses_heads: bool = False  # ranks tokens with TNT's relevance heads: needs them trained, and training trains them
    takes_reducer: bool = False  # the schedule's reducer (drop, merge, fuse) is its own
    needs_class_token: bool = False  # ranks by the class token's attention
    traceable: bool = False  # `tnt visualize` can draw which patches it keeps
    compile_blocker: str = ""  # why torch.compile cannot take it ("": it can)
    calibrated_by_default: bool = False  # in `tnt calibrate`'s default --methods
    own_setting: str | None = None  # a setting only this method takes (ToMe's merge count r)


REFERENCE = "tnt"  # the method a schedule describes: the others are matched to its GMACs
DENSE = "dense"

REGISTRY: tuple[Method, ...] = (
    Method(REFERENCE, "tnt_cli.methods.tnt:configure", "TNT", "TNT relevance heads (Training Noise Token pruning)",
           ("tab:blue", "o"), uses_heads=True, takes_reducer=True, traceable=True, calibrated_by_default=True),
    Method("random", "tnt_cli.methods.random:configure", "random", "random token selection (a baseline)",
           ("tab:gray", "x"), traceable=True, calibrated_by_default=True,
           compile_blocker="its per-image seeded generators keep Python-side state that changes every call "
           "(recompiles)"),
    Method("evit", "tnt_cli.methods.evit:configure", "EViT", "CLS-attention scores (EViT)", ("tab:orange", "^"),
           aliases=("cls-attn",), needs_class_token=True, traceable=True, calibrated_by_default=True),
    Method("evit-fuse", "tnt_cli.methods.evit:configure_fused", "EViT + fusion",
           "CLS-attention scores, dropped tokens fused into one (EViT)", ("tab:red", "v"), needs_class_token=True),
    Method("tome", "tnt_cli.methods.tome:configure", "ToMe", "token merging (ToMe)", ("tab:green", "s"),
           calibrated_by_default=True, own_setting="tome_r"),
    Method(DENSE, "tnt_cli.methods.tnt:configure_dense", "dense", "every token (no pruning)", ("black", "*"),
           reduces=False),
)  # fmt: skip

_BY_NAME = {m.name: m for m in REGISTRY}
ALIASES = {alias: m.name for m in REGISTRY for alias in m.aliases}
METHODS = tuple(_BY_NAME)
# The methods that reduce tokens: what `tnt finetune --method` trains and `tnt calibrate` sweeps, in this order.
REDUCING_METHODS = tuple(m.name for m in REGISTRY if m.reduces)


def canonical(name: str) -> str:
    """A method name with its alias resolved (unknown names come back unchanged, for the caller to refuse)."""
    return ALIASES.get(name, name)


def lookup(name: str) -> Method:
    """The record of `name` (an alias is resolved), or one line naming the choices."""
    found = _BY_NAME.get(canonical(name))
    if found is None:
        raise TntError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}{alias_note()}")
    return found


def alias_note(among: tuple[str, ...] = METHODS) -> str:
    """' (cls-attn = evit)': the aliases of the methods in `among`, as a footnote to a list of choices."""
    pairs = [f"{alias} = {name}" for alias, name in ALIASES.items() if name in among]
    return f" ({', '.join(pairs)})" if pairs else ""


def metavar(among: tuple[str, ...], *, first: tuple[str, ...] = ()) -> str:
    """'[tnt|random|evit|evit-fuse|tome]': the choices as a help screen shows them."""
    return "[" + "|".join((*first, *among)) + "]"


def names(**wanted: bool) -> tuple[str, ...]:
    """The names of the methods whose record has every given capability, e.g. `names(traceable=True)`."""
    return tuple(m.name for m in REGISTRY if all(getattr(m, key) == value for key, value in wanted.items()))

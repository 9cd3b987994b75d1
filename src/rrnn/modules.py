"""Restricted RNN / GRU / LSTM layers and cells: drop-in ``torch.nn`` replacements.

Parameters of layer ``L`` and direction ``sfx`` (``""`` or ``"_reverse"``),
with ``k_x`` the layer's input size, ``d = hidden_size``, ``n`` gates, the
shared head ``head = min(A_x, A_h)`` rows, the tail and private counts ``Q_x``,
``Q_h`` as defined in :mod:`rrnn.restriction`::

    weight_shared_l{L}{sfx}       (head, max(k_x, d))   rows every gate of both inputs reads
    weight_shared_tail_l{L}{sfx}  (tail, k_owner)       shared rows only one input reads
                                                        (0 rows at a uniform sharing rate)
    weight_ih_private_l{L}{sfx}   (Q_x, k_x)            private rows of x, gate after gate
    weight_hh_private_l{L}{sfx}   (Q_h, d)              private rows of h, gate after gate
    bias_shared_l{L}{sfx}         (s_r,)
    bias_ih_private_l{L}{sfx}     (Q_x,)
    bias_hh_private_l{L}{sfx}     (Q_h,)

At a uniform rate ``r``: ``head = s = round(r*d)``, ``Q_x = Q_h = n*(d - s)``.
Gate order is torch.nn's: LSTM (i, f, g, o), GRU (r, z, n), RNN (one gate).

The full ``weight_ih_l{L}`` of shape ``(n*d, k_x)`` is gathered from these once
per forward call (gate ``j`` rows ``0..s_j-1`` are shared rows ``0..s_j-1``),
then torch's fused recurrent kernel runs over the whole sequence.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import re
import warnings
import weakref

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import kernels
from . import restriction as R
from .torch_classes import TORCH_CELLS, TORCH_LAYERS

# torch.nn's four weights of a layer (or cell), in the order layer_weights returns them
_FULL_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_MISSING = object()
_TORCH_WEIGHT_NAME = re.compile(
    r"(?P<kind>weight|bias)_(?P<input>ih|hh)_l(?P<layer>\d+)(?P<reverse>_reverse)?"
)


# --------------------------------------------------------------------------
# Shared machinery: compact parameters of one (layer, direction) and their
# gather into full torch.nn-shaped weights.
# --------------------------------------------------------------------------
class _CompactWeights(nn.Module):
    """Helpers shared by the layers and the cells. Not a public class."""

    def _register_compact(self, res: R.Restriction, sfx: str, bias: bool, factory) -> None:
        k_x, k_h = res.in_sizes
        sizes = [
            ("weight_shared", (res.head_rows, res.k_r)),
            ("weight_shared_tail", (res.tail_rows, res.tail_cols)),
            ("weight_ih_private", (res.private_rows(0), k_x)),
            ("weight_hh_private", (res.private_rows(1), k_h)),
        ]
        if bias:
            sizes += [
                ("bias_shared", (res.s_r,)),
                ("bias_ih_private", (res.private_rows(0),)),
                ("bias_hh_private", (res.private_rows(1),)),
            ]
        for name, size in sizes:
            tensor = torch.empty(size, **factory)
            if tensor.numel():
                self.register_parameter(f"{name}{sfx}", nn.Parameter(tensor))
            else:
                # an empty block (the shared rows at r = 0, the private rows at r = 1,
                # the tail at a uniform rate) is no parameter: every parameter then takes
                # part in every forward pass, as DistributedDataParallel and
                # torch.autograd.grad(loss, module.parameters()) require
                self.register_buffer(f"{name}{sfx}", tensor, persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # state_dicts written by rrnn 0.1.0 hold the empty blocks as parameters
        for name, buf in self._buffers.items():
            key = prefix + name
            if buf is not None and buf.numel() == 0 and key in state_dict:
                if state_dict[key].numel() == 0:
                    state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _register_index(self, res: R.Restriction, key: str) -> None:
        for i, tag in enumerate(("ih", "hh")):
            index = torch.tensor(res.gather_index(i), dtype=torch.long)
            self.register_buffer(f"_index_{tag}{key}", index, persistent=False)

    def _compact(self, sfx: str) -> dict[str, Tensor | None]:
        names = (
            "weight_shared",
            "weight_shared_tail",
            "weight_ih_private",
            "weight_hh_private",
            "bias_shared",
            "bias_ih_private",
            "bias_hh_private",
        )
        return {name: getattr(self, name + sfx, None) for name in names}

    def _gather(
        self, res: R.Restriction, sfx: str, key: str
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Full ``(w_ih, w_hh, b_ih, b_hh)`` of one (layer, direction), shapes
        ``(n*d, k_x)``, ``(n*d, d)``, ``(n*d,)``, ``(n*d,)``; differentiable, so a
        shared row's gradient is the sum over every matrix that reads it."""
        p = self._compact(sfx)
        if res.s_r == 0:  # classical: the private rows, gate after gate, are the weights
            return (
                p["weight_ih_private"],
                p["weight_hh_private"],
                p["bias_ih_private"],
                p["bias_hh_private"],
            )
        out_w, out_b = [], []
        for i, tag in enumerate(("ih", "hh")):
            k_i = res.in_sizes[i]
            index = getattr(self, f"_index_{tag}{key}")
            parts = [p["weight_shared"][:, :k_i]]
            if res.tail_rows and res.tail_owner == i:
                parts.append(p["weight_shared_tail"])
            parts.append(p[f"weight_{tag}_private"])
            # one gate: the source rows already are the matrix (the index is 0..d-1)
            one_gate = res.n == 1
            src_w = torch.cat(parts)
            out_w.append(src_w if one_gate else src_w.index_select(0, index))  # (n*d, k_i)
            if p["bias_shared"] is not None:
                src = torch.cat([p["bias_shared"][: res.reach[i]], p[f"bias_{tag}_private"]])
                out_b.append(src if one_gate else src.index_select(0, index))  # (n*d,)
            else:
                out_b.append(None)
        return out_w[0], out_w[1], out_b[0], out_b[1]

    @torch.no_grad()
    def _scatter(self, res: R.Restriction, sfx: str, key: str, full: tuple) -> None:
        """The inverse of :meth:`_gather`: set the compact parameters from full
        ``(w_ih, w_hh, b_ih, b_hh)``. Every compact entry becomes the mean of the
        entries of ``full`` that read it (least squares, as ``from_torch``; exact for
        private rows and wherever the rows sharing an entry agree)."""
        p = self._compact(sfx)
        if res.s_r == 0:
            names = ("weight_ih_private", "weight_hh_private", "bias_ih_private", "bias_hh_private")
            for name, t in zip(names, full):
                if p[name] is not None and t is not None:
                    p[name].copy_(t)
            return
        head, tail = p["weight_shared"], p["weight_shared_tail"]
        s_sum, s_cnt = torch.zeros_like(head), torch.zeros_like(head)  # (head_rows, k_r)
        sb_sum = None if p["bias_shared"] is None else torch.zeros_like(p["bias_shared"])
        sb_cnt = None if sb_sum is None else torch.zeros_like(sb_sum)
        for i, tag in enumerate(("ih", "hh")):
            k_i, w = res.in_sizes[i], full[i]
            index = getattr(self, f"_index_{tag}{key}")
            owner = bool(res.tail_rows) and res.tail_owner == i
            rows = res.head_rows + (res.tail_rows if owner else 0) + res.private_rows(i)
            ones = w.new_ones(index.numel())
            src = w.new_zeros(rows, k_i).index_add_(0, index, w)  # sums of the rows read
            read = w.new_zeros(rows).index_add_(0, index, ones)[:, None]  # (rows, 1)
            cnt = read.clamp(min=1)
            s_sum[:, :k_i] += src[: res.head_rows]
            s_cnt[:, :k_i] += read[: res.head_rows]
            at = res.head_rows
            if owner:
                tail.copy_(src[at : at + res.tail_rows, : tail.size(1)] / cnt[at : at + res.tail_rows])
                at += res.tail_rows
            if res.private_rows(i):
                p[f"weight_{tag}_private"].copy_(src[at:] / cnt[at:])
            if sb_sum is not None and full[2 + i] is not None:
                b, reach = full[2 + i], res.reach[i]
                bsrc = b.new_zeros(reach + res.private_rows(i)).index_add_(0, index, b)
                bcnt = b.new_zeros(bsrc.numel()).index_add_(0, index, ones)
                sb_sum[:reach] += bsrc[:reach]
                sb_cnt[:reach] += bcnt[:reach]
                if res.private_rows(i):
                    p[f"bias_{tag}_private"].copy_(bsrc[reach:] / bcnt[reach:].clamp(min=1))
        read = s_cnt > 0  # entries no matrix reads keep their value
        head[read] = s_sum[read] / s_cnt[read]
        if sb_sum is not None:
            p["bias_shared"].copy_(sb_sum / sb_cnt.clamp(min=1))

    def _pool(self, res: R.Restriction, sfx: str) -> tuple[Tensor, Tensor | None]:
        p = self._compact(sfx)
        ref = p["weight_ih_private"]
        weight = ref.new_zeros(res.d_r, res.k_r)
        weight[: res.head_rows] = p["weight_shared"]
        weight[res.head_rows : res.s_r, : res.tail_cols] = p["weight_shared_tail"]
        row = res.s_r
        for i, tag in enumerate(("ih", "hh")):
            rows = res.private_rows(i)
            weight[row : row + rows, : res.in_sizes[i]] = p[f"weight_{tag}_private"]
            row += rows
        bias = None
        if p["bias_shared"] is not None:
            bias = torch.cat([p["bias_shared"], p["bias_ih_private"], p["bias_hh_private"]])
        return weight.detach(), None if bias is None else bias.detach()

    @torch.no_grad()
    def _load_pool(self, res: R.Restriction, sfx: str, weight: Tensor, bias: Tensor | None) -> None:
        if not isinstance(weight, Tensor) or tuple(weight.shape) != (res.d_r, res.k_r):
            got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(
                f"load_pool: weight must have shape (d_r, k_r) = ({res.d_r}, {res.k_r}) "
                f"for this layer, got {got}"
            )
        p = self._compact(sfx)
        has_bias = p["bias_shared"] is not None
        if has_bias and (not isinstance(bias, Tensor) or tuple(bias.shape) != (res.d_r,)):
            got = tuple(bias.shape) if isinstance(bias, Tensor) else repr(bias)
            raise ValueError(
                f"load_pool: bias must have shape (d_r,) = ({res.d_r},) for this layer "
                f"(the module has bias=True), got {got}"
            )
        if not has_bias and bias is not None:
            raise ValueError("load_pool: this module has bias=False; pass bias=None")
        p["weight_shared"].copy_(weight[: res.head_rows])
        p["weight_shared_tail"].copy_(weight[res.head_rows : res.s_r, : res.tail_cols])
        row = res.s_r
        for i, tag in enumerate(("ih", "hh")):
            rows = res.private_rows(i)
            p[f"weight_{tag}_private"].copy_(weight[row : row + rows, : res.in_sizes[i]])
            if has_bias:
                p[f"bias_{tag}_private"].copy_(bias[row : row + rows])
            row += rows
        if has_bias:
            p["bias_shared"].copy_(bias[: res.s_r])

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as torch.nn."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    # torch.ao.quantization (quantize_dynamic, prepare) tags every module it visits
    # with ``qconfig`` and then swaps only the module types it knows, so a restricted
    # layer would stay float32 without a word: the tag is where it can be told.
    # Unset, the attribute is absent (getattr's default applies, as on any module).
    @property
    def qconfig(self):
        if "_qconfig" not in self.__dict__:
            raise AttributeError("qconfig")
        return self.__dict__["_qconfig"]

    @qconfig.setter
    def qconfig(self, value) -> None:
        self.__dict__["_qconfig"] = value
        route = ("quantize_dynamic(rrnn.deploy.compact(layer)) quantizes its compact "
                 "blocks, which are nn.Linear modules there" if isinstance(self, RestrictedRNNBase)
                 else "quantize_dynamic(cell.to_torch()) quantizes torch.nn's cell")  # fmt: skip
        warnings.warn(
            f"torch.ao.quantization leaves {type(self).__name__} in float32 (it swaps only "
            f"the module types it knows). Convert it first: {route}; for a language "
            "model, `rrnn export --int8`",
            UserWarning,
            stacklevel=2,
        )

    @qconfig.deleter
    def qconfig(self) -> None:
        if self.__dict__.pop("_qconfig", _MISSING) is _MISSING:
            raise AttributeError("qconfig")

    def __prepare_scriptable__(self):
        raise TypeError(
            f"{type(self).__name__} cannot be compiled by torch.jit.script: its weights are "
            "gathered from compact shared/private parameters in Python (and TorchScript "
            "is deprecated). Use torch.compile(module) to compile it, torch.export.export"
            "(module, args) to export it, or module.to_torch() for a plain torch.nn module "
            "with the same outputs."
        )


# module -> the _Watch of every tensor it handed out under a torch.nn name and
# that is still alive (weak: neither the module nor its tensors are kept alive)
_WATCHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Watch:
    """A gathered full matrix handed out as ``m.weight_hh_l0`` (say): when it has
    been written (in place, or through ``.data``, which shares its storage), the
    write goes into the layer through ``set_layer_weights``. Checked when the tensor
    is garbage-collected and at the module's next forward, state_dict, weight read
    or conversion; a watch ends once nothing but itself holds the storage (in
    ``m.bias_ih_l0.data[H:2*H] = 1`` the tensor dies before ``.data`` is written,
    so the write is applied at the next of those)."""

    def __init__(self, module, layer: int, direction: int, index: int, tensor: Tensor) -> None:
        self.module = weakref.ref(module)
        self.layer, self.direction, self.index = layer, direction, index
        self.view = tensor.detach()  # shares the storage, not the tensor's lifetime
        self.snapshot = self.view.clone()
        self.dead = False
        _WATCHES.setdefault(module, []).append(self)
        weakref.finalize(tensor, self._tensor_died)

    def sync(self) -> None:
        module = self.module()
        if module is None or torch.equal(self.view, self.snapshot):
            return
        given = [None] * 4
        given[self.index] = self.view
        sfx = "_reverse" if self.direction else ""
        kind = _FULL_NAMES[self.index]
        what = f"a write into m.{kind}_l{self.layer}{sfx}"
        module._write_full(self.layer, self.direction, given, what)
        self.snapshot = self.view.clone()

    def finished(self) -> bool:
        """The tensor is gone and no other tensor shares its storage."""
        if not self.dead:
            return False
        use_count = getattr(torch._C, "_storage_Use_Count", None)
        if use_count is None:  # a torch without it: one more flush, then stop
            return True
        return use_count(self.view.untyped_storage()._cdata) <= 2  # this view + the call's

    def _tensor_died(self) -> None:
        self.dead = True
        self.sync()
        if self.finished():
            self.close()

    def close(self) -> None:
        module = self.module()
        watches = _WATCHES.get(module) if module is not None else None
        if watches is not None and self in watches:
            watches.remove(self)
            if not watches:
                del _WATCHES[module]


class PathChoice(str):
    """A path name (compares equal to the plain string) with ``.reason``."""

    reason: str

    def __new__(cls, path: str, reason: str):
        obj = super().__new__(cls, path)
        obj.reason = reason
        return obj


def _check_dtype(t: Tensor, module: nn.Module, name: str, error=RuntimeError) -> None:
    """torch.nn's rules, with the fix named: input and state are on the weights'
    device and have their dtype (autocast excepted: there torch chooses the dtype
    of each operation). Checked before any path runs, so every path obeys them.
    ``error``: the class torch.nn raises for this tensor (ValueError for a layer's
    input, RuntimeError for its state and for the cells)."""
    weight = next((p for p in module.parameters() if p.numel()), None)
    if weight is None:
        return
    if t.device != weight.device:
        raise RuntimeError(
            f"{type(module).__name__}: input and parameter tensors are not on the same device: "
            f"{name} is on {t.device}, the parameters on {weight.device}; move one with "
            f".to({str(weight.device)!r}) or .to({str(t.device)!r})"
        )
    if t.dtype == weight.dtype or torch.is_autocast_enabled(t.device.type):
        return
    hint = (
        "; token ids go through an nn.Embedding first, other integers through .float()"
        if not t.is_floating_point()
        else ""
    )
    raise error(
        f"{type(module).__name__}: {name} dtype ({t.dtype}) does not match weight dtype "
        f"({weight.dtype}). Convert {name}: {name}.to({weight.dtype}), or convert model: "
        f"model.to({t.dtype}){hint}"
    )


def _check_cell_state(h, name: str, expected: tuple, batched: bool, hidden: int) -> None:
    """torch.nn's cell checks and wording (RuntimeError), the expected shape added."""
    if not isinstance(h, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(h).__name__}")
    if h.dim() not in (1, 2):  # torch.nn's cells: ValueError, before any computation
        raise ValueError(
            f"Expected {name} to be 1D or 2D, got {h.dim()}D instead (shape {expected} "
            f"for {'batched' if batched else 'unbatched'} input)"
        )
    if h.dim() != len(expected):
        raise RuntimeError(
            f"{name} must be {len(expected)}-D {expected} for "
            f"{'batched' if batched else 'unbatched'} input, got shape {_shape(h)}"
        )
    if h.size(-1) != hidden:
        raise RuntimeError(
            f"hidden0 has inconsistent hidden_size: got {h.size(-1)}, expected {hidden} "
            f"({name} must have shape {expected})"
        )
    if batched and h.size(0) != expected[0]:
        raise RuntimeError(
            f"Input batch size {expected[0]} doesn't match hidden0 batch size {h.size(0)} "
            f"({name} must have shape {expected})"
        )


def _check_common(input_size, hidden_size, bias, mode: str) -> None:
    R.num_gates(mode)
    # torch.nn's classes and wording: TypeError for the type, ValueError for the value
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be greater than zero, got {value}")
    if not isinstance(bias, bool):
        raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")


def _check_nonlinearity(nonlinearity: str) -> None:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------
class _TorchWeights(_CompactWeights):
    """A layer's weights as torch.nn has them: the full matrices by layer and
    direction, torch.nn's weight names (read and written), and the shared pools
    (:meth:`pool`, :meth:`load_pool`). Part of :class:`RestrictedRNNBase`."""

    def layer_weights(
        self, layer: int, direction: int = 0
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """The full torch.nn weights ``(weight_ih, weight_hh, bias_ih, bias_hh)`` of
        one layer and direction, gathered from the compact parameters
        (differentiable). Shapes ``(n*H, k_x)``, ``(n*H, H)``, ``(n*H,)``, ``(n*H,)``."""
        self._flush_torch_names()
        return self._layer_weights(layer, direction)

    def _layer_weights(self, layer: int, direction: int = 0):
        self._check_layer(layer, direction)
        sfx = self._directions()[direction]
        return self._gather(self.restrictions[layer], f"_l{layer}{sfx}", f"_l{layer}")

    def flat_weights(self) -> list[Tensor]:
        """Every layer's full weights in torch.nn's ``_flat_weights`` order."""
        self._flush_torch_names()  # once, not per layer
        flat: list[Tensor] = []
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                w_ih, w_hh, b_ih, b_hh = self._layer_weights(layer, direction)
                flat += [w_ih, w_hh] + ([b_ih, b_hh] if self.bias else [])
        return flat

    def set_layer_weights(
        self, layer: int, weight_ih: Tensor | None = None, weight_hh: Tensor | None = None,
        bias_ih: Tensor | None = None, bias_hh: Tensor | None = None, direction: int = 0,
    ) -> None:  # fmt: skip
        """Set one layer's weights from torch.nn-shaped matrices (those not given keep
        their values): shapes ``(n*H, k_x)``, ``(n*H, H)``, ``(n*H,)``, ``(n*H,)``,
        gates in torch.nn order. Private rows are copied; each shared entry becomes
        the mean of the entries that read it (every gate, both inputs), as
        :meth:`from_torch` does, with a warning where they differed, so that the
        layer no longer holds what was written there (set the shared block exactly
        with :meth:`load_pool`). Writes through torch.nn's names
        (``nn.init.orthogonal_(m.weight_hh_l0)``, ``m.bias_ih_l0.data[H:2*H] = 1``)
        arrive here."""
        self._check_layer(layer, direction)
        self._flush_torch_names()
        given = (weight_ih, weight_hh, bias_ih, bias_hh)
        self._write_full(layer, direction, given, "set_layer_weights")

    @torch.no_grad()
    def _write_full(self, layer: int, direction: int, given, what: str) -> None:
        sfx = self._directions()[direction]
        res = self.restrictions[layer]
        current = [
            None if t is None else t.detach().clone() for t in self._layer_weights(layer, direction)
        ]
        for k, (name, new) in enumerate(zip(_FULL_NAMES, given)):
            if new is None:
                continue
            if current[k] is None:
                raise ValueError(f"{what}: {name} given, but the layer has bias=False")
            if not isinstance(new, Tensor) or new.shape != current[k].shape:
                got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                raise ValueError(
                    f"{what}: {name} of layer {layer} must have shape {tuple(current[k].shape)}, "
                    f"got {got}"
                )
            current[k] = new.detach().to(current[k])
        self._scatter(res, f"_l{layer}{sfx}", f"_l{layer}", current)
        kept = self._layer_weights(layer, direction)
        lost = [f"{n}_l{layer}{sfx}" for n, want, got in zip(_FULL_NAMES, current, kept)
                if want is not None and not torch.allclose(got, want, rtol=1e-6, atol=1e-7)]  # fmt: skip
        if lost:
            warnings.warn(
                f"{type(self).__name__}, {what}: {', '.join(lost)} now differ from what was "
                f"written, because the layer shares rows (its first {res.s_r} rows of every "
                "gate read one block, for both inputs): each shared entry is the mean of "
                "what was written there (least squares, as from_torch). Set the shared block "
                "exactly with load_pool.",
                UserWarning,
                stacklevel=3,
            )

    def _flush_torch_names(self) -> None:
        """Apply writes into tensors handed out under torch.nn's names."""
        watches = _WATCHES.get(self)
        if not watches:  # the usual case: nothing handed out
            return
        for watch in list(watches):
            watch.sync()
            if watch.finished():
                watch.close()

    # torch.nn's weight names (weight_ih_l0, bias_hh_l1_reverse, ...) read the
    # gathered full matrices, so code that inspects a torch.nn layer works here;
    # writes into them (nn.init.*_, .data[...] = ...) reach the layer through
    # set_layer_weights when the tensor dies or at the next forward, whichever comes first
    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            match = _TORCH_WEIGHT_NAME.fullmatch(name)
            if match is None or int(match["layer"]) >= self.num_layers:
                raise
            if match["reverse"] and not self.bidirectional:
                raise
            if match["kind"] == "bias" and not self.bias:
                raise
            i = {"weight": 0, "bias": 2}[match["kind"]] + {"ih": 0, "hh": 1}[match["input"]]
            layer, direction = int(match["layer"]), 1 if match["reverse"] else 0
            self._flush_torch_names()
            tensor = self._layer_weights(layer, direction)[i]
            if not isinstance(tensor, nn.Parameter):  # a gathered copy: watch it for writes
                _Watch(self, layer, direction, i, tensor)
            return tensor

    def _check_layer(self, layer: int, direction: int) -> None:
        if not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be in [0, {self.num_layers - 1}], got {layer!r}")
        if direction not in range(self.num_directions):
            raise ValueError(
                f"direction must be 0{' or 1' if self.bidirectional else ''} for this "
                f"{'bi' if self.bidirectional else 'uni'}directional module, got {direction!r}"
            )

    def pool(self, layer: int, direction: int = 0) -> tuple[Tensor, Tensor | None]:
        """One layer's parameters in the interchange layout (the authors' pool):
        ``weight`` of shape ``(d_r, k_r)`` and ``bias`` of shape ``(d_r,)`` (None
        without bias); rows: shared, then private rows of (x, gate 0..n-1),
        then of (h, gate 0..n-1); unused entries are zero. Returns copies."""
        self._flush_torch_names()
        self._check_layer(layer, direction)
        sfx = self._directions()[direction]
        return self._pool(self.restrictions[layer], f"_l{layer}{sfx}")

    def load_pool(
        self, layer: int, weight: Tensor, bias: Tensor | None = None, direction: int = 0
    ) -> None:
        """Set one layer's parameters from the interchange layout (see :meth:`pool`).
        Entries that no matrix reads are ignored."""
        self._check_layer(layer, direction)
        sfx = self._directions()[direction]
        self._load_pool(self.restrictions[layer], f"_l{layer}{sfx}", weight, bias)


class _Conversions:
    """From and to torch.nn's layers. Part of :class:`RestrictedRNNBase`."""

    @classmethod
    def from_torch(cls, module: nn.RNNBase, sharing_rate=0.5):
        """A restricted layer built from a ``torch.nn`` one of the same kind.

        Private rows are copied. Each shared row becomes the mean of the rows it
        replaces (the rows of every gate, and of both inputs on the columns both
        read): the least-squares choice, exact at ``sharing_rate=0``. A shared bias
        entry, added in both ``b_ih`` and ``b_hh``, becomes half the mean of
        ``b_ih + b_hh`` over the gates. ``sharing_rate`` is a float, or one per layer.
        """
        expected = TORCH_LAYERS[cls.cell]
        if not isinstance(module, expected):
            raise TypeError(
                f"{cls.__name__}.from_torch needs a {expected.__name__}, got {type(module).__name__}"
            )
        if module.proj_size:
            raise ValueError(
                "from_torch: torch.nn.LSTM with proj_size has no restricted counterpart"
            )
        kwargs = dict(
            num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
            dropout=module.dropout, bidirectional=module.bidirectional, sharing_rate=sharing_rate,
            device=module.weight_ih_l0.device, dtype=module.weight_ih_l0.dtype,
        )  # fmt: skip
        if cls.cell == "rnn":
            kwargs["nonlinearity"] = module.nonlinearity
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.nn warned about dropout already
            new = cls(module.input_size, module.hidden_size, **kwargs)
        if new.uniform_shares is None:
            raise ValueError(
                "from_torch takes a float sharing rate, or one float per layer; per-gate "
                "tables have no single shared block per row to average into"
            )
        n, d = R.num_gates(cls.cell), module.hidden_size
        with torch.no_grad():
            for layer, s in enumerate(new.uniform_shares):
                for sfx in new._directions():
                    new._copy_from_torch(module, layer, sfx, s, n, d)
        new.train(module.training)
        return new

    def _copy_from_torch(self, module, layer: int, sfx: str, s: int, n: int, d: int) -> None:
        w_ih = getattr(module, f"weight_ih_l{layer}{sfx}")
        k_x = w_ih.size(1)
        gx = w_ih.view(n, d, k_x)  # (gate, row, column)
        gh = getattr(module, f"weight_hh_l{layer}{sfx}").view(n, d, d)
        p = self._compact(f"_l{layer}{sfx}")
        if s:
            shared = p["weight_shared"]  # (s, max(k_x, d)): x reads [:, :k_x], h [:, :d]
            total = torch.zeros_like(shared)
            count = torch.zeros(shared.size(1), dtype=shared.dtype, device=shared.device)
            total[:, :k_x] += gx[:, :s].sum(0)
            count[:k_x] += n
            total[:, :d] += gh[:, :s].sum(0)
            count[:d] += n
            shared.copy_(total / count)
        if s < d:
            p["weight_ih_private"].copy_(gx[:, s:].reshape(-1, k_x))
            p["weight_hh_private"].copy_(gh[:, s:].reshape(-1, d))
        if self.bias:
            bx = getattr(module, f"bias_ih_l{layer}{sfx}").view(n, d)
            bh = getattr(module, f"bias_hh_l{layer}{sfx}").view(n, d)
            if s:
                p["bias_shared"].copy_(((bx[:, :s] + bh[:, :s]) / 2).mean(0))
            if s < d:
                p["bias_ih_private"].copy_(bx[:, s:].reshape(-1))
                p["bias_hh_private"].copy_(bh[:, s:].reshape(-1))

    def to_torch(self) -> nn.RNNBase:
        """The equivalent plain torch.nn module, with the weights materialized
        (a copy: training it does not keep the restriction)."""
        self._flush_torch_names()
        ref = next(self.parameters())
        cls = TORCH_LAYERS[self.cell]
        kwargs = dict(
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
            device=ref.device,
            dtype=ref.dtype,
        )
        if self.cell == "rnn":
            kwargs["nonlinearity"] = self.nonlinearity
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the dropout/num_layers=1 warning was given already
            plain = cls(self.input_size, self.hidden_size, **kwargs)
        with torch.no_grad():
            for layer in range(self.num_layers):
                for direction, sfx in enumerate(self._directions()):
                    tensors = self._layer_weights(layer, direction)  # flushed above
                    for name, t in zip(_FULL_NAMES, tensors):
                        if t is not None:
                            getattr(plain, f"{name}_l{layer}{sfx}").copy_(t)
        plain.train(self.training)
        return plain


class _Inputs:
    """torch.nn's input contract: shapes, batch_first, unbatched input, packed
    sequences and the initial state, checked and normalised for the paths, and
    the outputs put back. Part of :class:`RestrictedRNNBase`."""

    def _state_shape(self, batch: int) -> tuple[int, int, int]:
        return (self.num_layers * self.num_directions, batch, self.hidden_size)

    def _check_state(self, h: Tensor, name: str, batch: int, batched: bool) -> None:
        expected = self._state_shape(batch)
        if not batched:
            expected = (expected[0], expected[2])
        if not isinstance(h, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(h).__name__}")
        if _shape(h) != expected:
            got = _shape(h)
            raise RuntimeError(
                f"{name} must have shape (num_layers * num_directions, "
                f"{'batch, ' if batched else ''}hidden_size) = {expected}"
                f"{'' if batched else ' for unbatched input'}, got {got}"
            )

    def _prepare(self, input, hx):
        """Normalise input and state as torch.nn does. Returns
        ``(data, batch_sizes, hx, sorted_indices, unsorted_indices, batched)``."""
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            batched, batch = True, int(batch_sizes[0])
            if data.dim() != 2:
                raise ValueError(f"packed input data must be 2-D, got shape {_shape(data)}")
        else:
            if not isinstance(input, Tensor):
                raise TypeError(
                    f"input must be a Tensor or PackedSequence, got {type(input).__name__}"
                )
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"input must be 3-D (seq_len, batch, input_size) "
                    f"{'[batch_first] ' if self.batch_first else ''}or 2-D "
                    f"(seq_len, input_size) for unbatched input, got shape {_shape(input)}"
                )
            batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            data = input if batched else input.unsqueeze(batch_dim)
            batch_sizes = sorted_indices = unsorted_indices = None
            batch = data.size(batch_dim)
        if data.size(-1) != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {data.size(-1)} (the module was built with input_size={self.input_size})"
            )
        if batch_sizes is None and data.size(0 if not self.batch_first else 1) == 0:
            raise ValueError(
                f"Expected sequence length to be larger than 0 in {type(self).__name__}; "
                f"got input of shape {_shape(input)}"
            )
        _check_dtype(data, self, "input", error=ValueError)
        is_lstm = self.cell == "lstm"
        if hx is None:
            zeros = torch.zeros(self._state_shape(batch), dtype=data.dtype, device=data.device)
            hx = (zeros, zeros) if is_lstm else zeros
        else:
            names = ("h0", "c0") if is_lstm else ("h0",)
            states = hx if is_lstm else (hx,)
            if is_lstm and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
                raise ValueError(
                    f"hx must be a tuple (h0, c0) for an LSTM, got {type(hx).__name__}"
                )
            for h, name in zip(states, names):
                self._check_state(h, name, batch, batched)
                _check_dtype(h, self, name)
            if not batched:
                states = tuple(h.unsqueeze(1) for h in states)
            if sorted_indices is not None:
                states = tuple(h.index_select(1, sorted_indices) for h in states)
            hx = tuple(states) if is_lstm else states[0]
        return data, batch_sizes, hx, sorted_indices, unsorted_indices, batched

    def _finish(self, output, hidden, batch_sizes, sorted_idx, unsorted_idx, batched):
        states = hidden if isinstance(hidden, tuple) else (hidden,)
        if batch_sizes is not None:
            output = PackedSequence(output, batch_sizes, sorted_idx, unsorted_idx)
            if unsorted_idx is not None:
                states = tuple(h.index_select(1, unsorted_idx) for h in states)
        elif not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            states = tuple(h.squeeze(1) for h in states)
        hidden = states if self.cell == "lstm" else states[0]
        return output, hidden


class RestrictedRNNBase(_Inputs, _Conversions, _TorchWeights):
    """Common code of :class:`RestrictedRNN`, :class:`RestrictedGRU`, :class:`RestrictedLSTM`:
    construction, the path each call takes (:mod:`rrnn.kernels`), the reference
    path and the streaming lifecycle (:meth:`frozen`). The rest by job:
    :class:`_TorchWeights` (torch.nn's weights and names, the pools),
    :class:`_Conversions` (from and to torch.nn), :class:`_Inputs` (torch.nn's
    input contract); the compact parameters themselves: :class:`_CompactWeights`."""

    cell = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        sharing_rate=0.5,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        mode = self.cell
        _check_common(input_size, hidden_size, bias, mode)
        if not isinstance(batch_first, bool):  # "False" would mean True
            raise TypeError(
                f"batch_first should be of type bool, got: {type(batch_first).__name__}"
            )
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, numbers.Number)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                f"dropout must be a number in [0, 1] (the probability of zeroing an "
                f"element between layers), got {dropout!r}"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"dropout={dropout} has no effect with num_layers=1: dropout is applied "
                "between recurrent layers, after every layer but the last",
                stacklevel=2,
            )
        if mode == "rnn":
            _check_nonlinearity(nonlinearity)
        self.mode = {
            "rnn": "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU",
            "gru": "GRU",
            "lstm": "LSTM",
        }[mode]
        self.nonlinearity = nonlinearity
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = 0
        self.sharing_rate = sharing_rate
        self.restrictions = R.layer_restrictions(
            mode, input_size, hidden_size, num_layers, sharing_rate, self.bidirectional
        )
        self._kernel = "auto"
        self.stream_cache = kernels.StreamCache()
        self.uniform_shares = kernels.uniform_shares(self)
        factory = {"device": device, "dtype": dtype}
        for layer, res in enumerate(self.restrictions):
            self._register_index(res, f"_l{layer}")
            for sfx in self._directions():
                self._register_compact(res, f"_l{layer}{sfx}", bias, factory)
        self.reset_parameters()

    def _directions(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def compact_weights(self, layer: int, direction: int = 0) -> dict[str, Tensor | None]:
        """The compact parameters of one layer and direction, by their names without
        suffix (``weight_shared``, ``weight_shared_tail``, ``weight_ih_private``,
        ``weight_hh_private``, ``bias_shared``, ``bias_ih_private``,
        ``bias_hh_private``; None where absent): what the kernels pack."""
        self._check_layer(layer, direction)
        return self._compact(f"_l{layer}{self._directions()[direction]}")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def kernel(self) -> str:
        """Which forward path to use: "auto" (default; chosen per call),
        "reference", "shared-row" or "stream". See :mod:`rrnn.kernels`."""
        return self._kernel

    @kernel.setter
    def kernel(self, value: str) -> None:
        if value not in kernels.KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(kernels.KERNELS)}, got {value!r}")
        self._kernel = value

    def path_for(self, input, hx=None) -> str:
        """The path a call ``self(input, hx)`` would take now: a ``str`` whose
        ``.reason`` says why (measured on this machine, pinned, or why a path
        cannot run). May time the candidate paths once, as the call itself would."""
        data, batch_sizes, hx_, *_ = self._prepare(input, hx)
        steps = data.size(1 if self.batch_first else 0)
        return PathChoice(*kernels.explain(self, data, batch_sizes, steps, hx_))

    @contextlib.contextmanager
    def frozen(self):
        """Fast streaming for inference: inside ``with module.frozen():`` one-step
        calls keep their packed weights between calls instead of packing them
        afresh each time (measured on the README's 3 x 200 LSTM: about 3x lower
        latency). The weights must not change inside; that is checked on exit,
        where a change raises, since outputs computed inside may have used the old
        weights. Nests; thread-safe for calls (not for entering and leaving)."""
        before = [p.detach().clone() for p in self.parameters()]
        cache = self.stream_cache
        cache.frozen += 1
        try:
            yield self
        finally:
            cache.frozen -= 1
            if not cache.frozen:
                cache.key = None
        if any(not torch.equal(a, p) for a, p in zip(before, self.parameters())):
            raise RuntimeError(
                f"{type(self).__name__}: weights changed inside frozen(); streaming "
                "outputs computed inside may have used the old weights. Change weights "
                "outside frozen()."
            )

    def flatten_parameters(self) -> None:
        """No-op, for code written against torch.nn: the full weights are
        gathered afresh on every forward call."""

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_dict(self, *args, **kwargs):
        self._flush_torch_names()  # a write through a torch.nn name is in the saved state
        return super().state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.cell == "rnn" and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        s += f", sharing_rate={self.sharing_rate!r}, params={self.num_parameters():,}"
        return s

    def forward(self, input, hx=None):
        """Same contract as the torch.nn module: ``input`` of shape (L, N, H_in)
        (``batch_first``: (N, L, H_in)), (L, H_in) unbatched, or a PackedSequence;
        ``hx`` (h0, or (h0, c0) for the LSTM) of shape (D*num_layers, N, H) or
        (D*num_layers, H) unbatched. Returns ``(output, h_n)`` or
        ``(output, (h_n, c_n))``."""
        self._flush_torch_names()
        data, batch_sizes, hx, sorted_idx, unsorted_idx, batched = self._prepare(input, hx)
        steps = data.size(1 if self.batch_first else 0)
        path = kernels.choose(self, data, batch_sizes, steps, hx)
        if path != "reference":
            if torch.compiler.is_compiling():  # a path forced by the user: leave it eager
                run = _STREAM if path == "stream" else _SHARED_ROW
            else:
                run = kernels.stream_forward if path == "stream" else kernels.shared_row_forward
            output, hidden = run(self, data, hx)
            return self._finish(output, hidden, batch_sizes, sorted_idx, unsorted_idx, batched)
        output, hidden = self.reference_forward(data, batch_sizes, hx)
        return self._finish(output, hidden, batch_sizes, sorted_idx, unsorted_idx, batched)

    def reference_forward(self, data, batch_sizes, hx):
        """The reference path: torch's fused recurrent kernel on the gathered weights."""
        weights = self.flat_weights()
        fn = _VF_LAYER[self.mode]
        hx_arg = list(hx) if isinstance(hx, tuple) else hx
        with _quiet_cuda(data):
            if batch_sizes is None:
                result = fn(
                    data,
                    hx_arg,
                    weights,
                    self.bias,
                    self.num_layers,
                    self.dropout,
                    self.training,
                    self.bidirectional,
                    self.batch_first,
                )
            else:
                result = fn(
                    data,
                    batch_sizes,
                    hx_arg,
                    weights,
                    self.bias,
                    self.num_layers,
                    self.dropout,
                    self.training,
                    self.bidirectional,
                )
        output = result[0]
        hidden = tuple(result[1:]) if self.cell == "lstm" else result[1]
        return output, hidden


# torch.compile leaves the fast paths eager (they loop over time steps in Python)
_STREAM = torch.compiler.disable(kernels.stream_forward)
_SHARED_ROW = torch.compiler.disable(kernels.shared_row_forward)


def _vf(name):
    # torch.compile cannot trace the fused recurrent kernels (dynamo also graph-
    # breaks on torch.nn's RNN modules); leave the call eager, compile the rest.
    # torch.export (strict) has no eager to leave it to: there the op is recorded.
    op = getattr(torch._VF, name)
    eager = torch.compiler.disable(op)
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)

    def call(*args):
        return op(*args) if exporting() else eager(*args)

    return call


_VF_LAYER = {
    "RNN_TANH": _vf("rnn_tanh"),
    "RNN_RELU": _vf("rnn_relu"),
    "GRU": _vf("gru"),
    "LSTM": _vf("lstm"),
}


class _quiet_cuda:
    """cuDNN warns that gathered weights are not one contiguous chunk; they are
    gathered afresh on every call by design, so the warning says nothing new."""

    def __init__(self, t: Tensor):
        self.on = t.is_cuda
        self.ctx = warnings.catch_warnings() if self.on else None

    def __enter__(self):
        if self.on:
            self.ctx.__enter__()
            warnings.filterwarnings("ignore", message="RNN module weights are not part")

    def __exit__(self, *exc):
        if self.on:
            return self.ctx.__exit__(*exc)
        return False


class RestrictedRNN(RestrictedRNNBase):
    r"""Elman RNN with restricted (shared-row) weights; drop-in for :class:`torch.nn.RNN`.

    ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` (or relu), where the
    first ``s = round(sharing_rate * hidden_size)`` rows of ``W_ih`` and
    ``W_hh`` (and of their biases) are the same shared rows.

    Args are torch.nn.RNN's, plus ``sharing_rate``: a float in [0, 1], a
    ``(2, 1)`` table (rows: input x, input h), or a list with one of those per
    layer. 0 is the classical RNN exactly. Parameters: see :mod:`rrnn.modules`.
    """

    cell = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        sharing_rate=0.5,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            sharing_rate,
            nonlinearity,
            device,
            dtype,
        )


class RestrictedGRU(RestrictedRNNBase):
    r"""GRU with restricted (shared-row) weights; drop-in for :class:`torch.nn.GRU`.

    Gates in torch.nn order (r, z, n)::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Every one of the six matrices takes its first ``round(r_ij * hidden_size)``
    rows from one shared block per layer and direction. ``sharing_rate``: a
    float, a ``(2, 3)`` table (rows x, h; columns r, z, n), or one per layer.
    """

    cell = "gru"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        sharing_rate=0.5,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            sharing_rate,
            "tanh",
            device,
            dtype,
        )


class RestrictedLSTM(RestrictedRNNBase):
    r"""LSTM with restricted (shared-row) weights; drop-in for :class:`torch.nn.LSTM`.

    Gates in torch.nn order (i, f, g, o); ``c' = f*c + i*g``, ``h' = o*tanh(c')``.
    Every one of the eight (input, gate) matrices takes its first
    ``round(r_ij * hidden_size)`` rows from one shared block per layer and
    direction. ``sharing_rate``: a float, a ``(2, 4)`` table (rows x, h;
    columns i, f, g, o), or one per layer. ``proj_size`` is not supported.
    """

    cell = "lstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        sharing_rate=0.5,
        device=None,
        dtype=None,
        *,
        proj_size: int = 0,
    ) -> None:
        if proj_size:
            raise ValueError(
                f"proj_size={proj_size!r} is not supported by RestrictedLSTM; use proj_size=0 "
                "(or a Linear layer on the outputs)"
            )
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            sharing_rate,
            "tanh",
            device,
            dtype,
        )


# --------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------
class RestrictedCellBase(_CompactWeights):
    cell = ""

    def __init__(self, input_size, hidden_size, bias, sharing_rate, nonlinearity, device, dtype):
        super().__init__()
        _check_common(input_size, hidden_size, bias, self.cell)
        if self.cell == "rnn":
            _check_nonlinearity(nonlinearity)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.nonlinearity = nonlinearity
        self.sharing_rate = sharing_rate
        self.restriction = R.layer_restrictions(
            self.cell, input_size, hidden_size, 1, sharing_rate
        )[0]
        self._register_index(self.restriction, "")
        self._register_compact(self.restriction, "", bias, {"device": device, "dtype": dtype})
        self.reset_parameters()

    def weights(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Full ``(weight_ih, weight_hh, bias_ih, bias_hh)`` as torch.nn's cell has them."""
        return self._gather(self.restriction, "", "")

    def pool(self) -> tuple[Tensor, Tensor | None]:
        """Parameters in the interchange layout; see :meth:`RestrictedRNNBase.pool`."""
        return self._pool(self.restriction, "")

    def load_pool(self, weight: Tensor, bias: Tensor | None = None) -> None:
        self._load_pool(self.restriction, "", weight, bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def to_torch(self) -> nn.Module:
        ref = next(self.parameters())
        kwargs = dict(bias=self.bias, device=ref.device, dtype=ref.dtype)
        if self.cell == "rnn":
            kwargs["nonlinearity"] = self.nonlinearity
        plain = TORCH_CELLS[self.cell](self.input_size, self.hidden_size, **kwargs)
        with torch.no_grad():
            for name, t in zip(_FULL_NAMES, self.weights()):
                if t is not None:
                    getattr(plain, name).copy_(t)
        return plain

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.cell == "rnn" and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        return s + f", sharing_rate={self.sharing_rate!r}, params={self.num_parameters():,}"

    def _prepare(self, input: Tensor, hx):
        if not isinstance(input, Tensor) or input.dim() not in (1, 2):
            got = _shape(input) if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(
                f"input must be 2-D (batch, input_size) or 1-D (input_size,), got {got}"
            )
        if input.size(-1) != self.input_size:
            raise RuntimeError(
                f"input has inconsistent input_size: got {input.size(-1)} expected "
                f"{self.input_size}"
            )
        _check_dtype(input, self, "input")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        expected = (x.size(0), self.hidden_size) if batched else (self.hidden_size,)
        names = ("h", "c") if self.cell == "lstm" else ("h",)
        if hx is None:
            zeros = x.new_zeros(x.size(0), self.hidden_size)
            states = (zeros,) * len(names)
        else:
            states = tuple(hx) if self.cell == "lstm" else (hx,)
            if len(states) != len(names):
                raise ValueError(
                    f"hx must be a tuple (h, c) for an LSTM cell, got {len(states)} tensors"
                )
            for h, name in zip(states, names):
                _check_cell_state(h, name, expected, batched, self.hidden_size)
                _check_dtype(h, self, name)
            if not batched:
                states = tuple(h.unsqueeze(0) for h in states)
        return x, states, batched

    def forward(self, input: Tensor, hx=None):
        """torch.nn cell contract: input (N, H_in) or (H_in,); returns h' (or (h', c'))."""
        x, states, batched = self._prepare(input, hx)
        w_ih, w_hh, b_ih, b_hh = self.weights()
        if self.cell == "lstm":
            out = torch._VF.lstm_cell(x, states, w_ih, w_hh, b_ih, b_hh)
        elif self.cell == "gru":
            out = (torch._VF.gru_cell(x, states[0], w_ih, w_hh, b_ih, b_hh),)
        elif self.nonlinearity == "tanh":
            out = (torch._VF.rnn_tanh_cell(x, states[0], w_ih, w_hh, b_ih, b_hh),)
        else:
            out = (torch._VF.rnn_relu_cell(x, states[0], w_ih, w_hh, b_ih, b_hh),)
        if not batched:
            out = tuple(h.squeeze(0) for h in out)
        return tuple(out) if self.cell == "lstm" else out[0]


class RestrictedRNNCell(RestrictedCellBase):
    """Drop-in for :class:`torch.nn.RNNCell` with restricted weights (see :class:`RestrictedRNN`)."""

    cell = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        sharing_rate=0.5,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, sharing_rate, nonlinearity, device, dtype)


class RestrictedGRUCell(RestrictedCellBase):
    """Drop-in for :class:`torch.nn.GRUCell` with restricted weights (see :class:`RestrictedGRU`)."""

    cell = "gru"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        sharing_rate=0.5,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, sharing_rate, "tanh", device, dtype)


class RestrictedLSTMCell(RestrictedCellBase):
    """Drop-in for :class:`torch.nn.LSTMCell` with restricted weights (see :class:`RestrictedLSTM`)."""

    cell = "lstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        sharing_rate=0.5,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, sharing_rate, "tanh", device, dtype)

"""A Python-syntax calculator: our own interpreter over ``ast.parse``, never ``eval``/``exec``.

The model's code is parsed with ``ast.parse`` and walked by ``_Interp``, which knows a whitelist of
node types and a table of functions; everything else is refused with a one-line error that goes back
to the model. Supported:

* numbers (int, float, complex, bool, None), strings (for labels), lists, tuples, sets;
* arithmetic, comparisons (chained), ``and``/``or``/``not``, conditional expressions, f-strings;
* names, assignment (also ``a, b = b, a + b``, ``x[i] = ...``, ``+=`` ...), ``if``, ``for`` over
  ranges/sequences, ``while``, ``break``/``continue``, list/set comprehensions and generator
  expressions (evaluated eagerly);
* calls to the functions in ``FUNCTIONS`` (print, abs, min, max, sum, round, int, float, str, len,
  range, pow, divmod, sorted, ...), the ``math`` functions and constants in ``MATH`` as ``math.sqrt``
  or bare ``sqrt``, ``Fraction``; list methods append/extend/pop/insert/sort/reverse/count/index;
  ``.numerator``/``.denominator``/``.real``/``.imag``.

Refused: imports (``math`` is already there), ``def``/``lambda``/``class``, any other attribute
(so ``().__class__`` and friends), names starting with ``__``, dicts, ``%``-formatting of strings,
and every builtin not in the table (``open``, ``__import__``, ``eval``, ``getattr``, ``type`` ...).

Bounds, so that no single operation can take long or allocate much: integers stay under
``MAX_INT_BITS`` bits (checked *before* ``**``, ``*``, ``<<``, ``factorial``, ``comb``, ``perm``, and
for Fraction exponents and Fraction strings), sequences under ``MAX_LEN`` elements, nesting under
``MAX_DEPTH``; a work budget of ``MAX_STEPS`` units is charged per node, per loop iteration, per
element allocated and per 64 bits of big-integer work, so infinite loops and memory bombs end with
"step limit reached". Printed output is cut at ``MAX_OUTPUT`` characters.

Work that Python's C code does element by element is charged *before* it runs, from a bounded walk
of the values involved (``Meter``): comparisons and membership of nested values (``==``, ``<``,
``in``, ``list.count``/``index``, ``sort``, ``sorted``, ``min``/``max``), hashing (sets; a value nested
deeper than ``MAX_DEPTH`` is refused, as hashing it would overflow the C stack), sets whose elements
share a hash value (each such group costs quadratic time; the groups are counted, with keys that
cannot collide, before the set is built, and membership tests pay for the largest group), moving a
list's elements (``insert``, ``pop(i)``, ``reverse``), big-integer division, ``pow`` with a modulus,
and ``str`` of a big integer. ``x in range(...)`` is answered in constant time for any ``x``.

This module imports only the standard library: ``stare.env.tools.sandbox`` runs it in a separate process
(``ProcessPool``) with CPU-time and address-space limits, so that a bug here cannot reach the trainer.
"""

import ast
import math
import re
from fractions import Fraction

MAX_CODE_CHARS = 10_000
MAX_STEPS = 500_000  # about 1 s of interpretation on the development machine
MAX_INT_BITS = 14_000  # ~4,200 decimal digits, under Python's own 4,300-digit str() limit
MAX_LEN = 100_000
MAX_OUTPUT = 4_000
MAX_DEPTH = 100
WALK_PER_UNIT = 16  # nodes of a value the meter visits per unit of work (Python-level walking)
COMPARES_PER_UNIT = 32  # element comparisons or hash probes of C code per unit of work
MAX_EXPONENT_DIGITS = 4_300  # Fraction("1e...") exponents: beyond this the integer would be too large

_LOG2_10 = math.log2(10)
_CONTAINERS = (list, tuple, set)


class CalcError(Exception):
    """An error reported to the model as text."""


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _MathModule:
    def __repr__(self):
        return "<math>"


MATH_NS = _MathModule()


class _Fn:
    __slots__ = ("name", "impl", "keywords")

    def __init__(self, name, impl, keywords=()):
        self.name, self.impl, self.keywords = name, impl, frozenset(keywords)

    def __repr__(self):
        return f"<function {self.name}>"


class _Method:
    __slots__ = ("obj", "name")

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __repr__(self):
        return f"<method list.{self.name}>"


def _bits(x):
    """Size in bits of an int or of a Fraction's larger part."""
    if isinstance(x, Fraction):
        return max(x.numerator.bit_length(), x.denominator.bit_length())
    return abs(int(x)).bit_length()


def _log2(x):
    """log2 of the magnitude of an int or of a Fraction's larger part (0 for 0)."""
    if isinstance(x, Fraction):
        return max(_log2(x.numerator), _log2(x.denominator))
    return math.log2(abs(x)) if x else 0.0


def _too_big(bits):
    return CalcError(
        f"result too large (about {round(bits / _LOG2_10):,} digits); integers are limited to "
        f"{int(MAX_INT_BITS / _LOG2_10):,} digits"
    )


def _lgamma_bits(n):
    return math.lgamma(n + 1) / math.log(2)


class _Interp:
    def __init__(self):
        self.vars = {}
        self.out = []
        self.out_len = 0
        self.truncated = False
        self.steps = 0
        self.depth = 0
        self.line = 0
        self.sets = {}  # id -> (the set, its largest group of distinct elements sharing a hash value)

    # -- budget and output ---------------------------------------------------------------------

    def tick(self, n=1):
        self.steps += n
        if self.steps > MAX_STEPS:
            raise CalcError(f"step limit reached ({MAX_STEPS:,} units of work): the calculator is for short computations")

    def room(self):
        """Units of work left in the budget."""
        return max(0, MAX_STEPS - self.steps)

    # -- metering of work done by C code -------------------------------------------------------

    def walk(self, value, memo=None):
        """Tree size of ``value``: the nodes a comparison or a hash of it can visit (the value, each
        element of its nested lists, tuples and sets counted once per path, as C code visits a shared
        sub-list each time it occurs, and an integer's 64-bit words). Computed once per distinct
        container (``memo``: id -> (size, height)), so the walk itself costs the number of distinct
        elements, which is charged. A value nested deeper than ``MAX_DEPTH`` (hashing it would
        overflow the C stack) or a list that contains itself is refused."""
        t = type(value)
        if t not in _CONTAINERS:
            return 1 + (_bits(value) >> 6 if t is int or t is Fraction else 0)
        if memo is None and len(value) <= 32:  # the common case: a short flat tuple or list
            for x in value:
                if type(x) in _CONTAINERS:
                    break
            else:
                return 1 + len(value)
        memo = {} if memo is None else memo
        known = memo.get(id(value))
        if known is not None:
            return known[0]
        on_path = {id(value)}
        stack = [[value, iter(value), 1 + len(value), 1]]  # container, its iterator, size so far, height
        elements = len(value)
        while stack:
            frame = stack[-1]
            for x in frame[1]:
                tx = type(x)
                if tx in _CONTAINERS:
                    known = memo.get(id(x))
                    if known is None:
                        if id(x) in on_path:
                            raise CalcError("a list that contains itself cannot be compared or hashed")
                        if len(stack) >= MAX_DEPTH:
                            raise CalcError(f"value nested too deeply (more than {MAX_DEPTH} levels) to compare "
                                            f"or hash")
                        on_path.add(id(x))
                        elements += len(x)
                        stack.append([x, iter(x), 1 + len(x), 1])
                        break  # descend; this frame's iterator resumes afterwards
                    if len(stack) + known[1] > MAX_DEPTH:
                        raise CalcError(f"value nested too deeply (more than {MAX_DEPTH} levels) to compare or hash")
                    frame[2] += known[0]
                    frame[3] = max(frame[3], known[1] + 1)
                elif tx is int or tx is Fraction:
                    frame[2] += _bits(x) >> 6
            else:
                stack.pop()
                on_path.discard(id(frame[0]))
                memo[id(frame[0])] = (frame[2], frame[3])
                if stack:
                    stack[-1][2] += frame[2]
                    stack[-1][3] = max(stack[-1][3], frame[3] + 1)
        self.tick(elements // WALK_PER_UNIT)
        return memo[id(value)][0]

    def charge_compares(self, count):
        if count >= COMPARES_PER_UNIT:
            self.tick(int(count) // COMPARES_PER_UNIT)

    def compare(self, kind, a, b):
        """``a <op> b`` for ==, !=, <, <=, >, >=, charged for what the C code compares."""
        if type(a) in _CONTAINERS or type(b) in _CONTAINERS:
            if kind in (ast.Eq, ast.NotEq) and type(a) is type(b) and len(a) != len(b):
                pass  # unequal lengths: decided at once
            elif isinstance(a, set) and isinstance(b, set):
                small, big = (a, b) if len(a) <= len(b) else (b, a)
                self.charge_compares(len(small) * (1 + self.collisions(big)) * self.walk(small) / max(1, len(small)))
            else:
                self.charge_compares(min(self.walk(a), self.walk(b)))
        return _COMPARE[kind](a, b)

    def contains(self, x, seq):
        """``x in seq``, charged; constant time for ranges."""
        if isinstance(seq, range):
            return _in_range(x, seq)
        tx = type(x)
        if isinstance(seq, set):
            if tx is int:
                nx = 1 + (x.bit_length() >> 6)
            else:
                nx = 1 if tx is float or tx is str else self.walk(x)  # refuses deep nesting before hash() recurses
            self.charge_compares(nx * (1 + self.collisions(seq)))
        elif isinstance(seq, (list, tuple)):
            if tx is int or tx is float or tx is bool or tx is str or x is None:
                self.charge_compares(len(seq) * (1 + (x.bit_length() >> 6 if tx is int else 0)))
            else:
                self.charge_compares(self.scan_cost(x, seq))
        elif isinstance(seq, str) and isinstance(x, str):
            self.tick((len(seq) + len(x)) >> 8)
        return x in seq

    def scan_cost(self, x, seq):
        """Element comparisons of a linear search for ``x`` in ``seq``: at most len(seq) x size(x), and at
        most the size of ``seq``."""
        return min(len(seq) * self.walk(x), self.walk(seq))

    def charge_ordering(self, items, sort):
        """Before sorting ``items`` (sort=True) or taking their min/max: element comparisons, each at most
        the size of the elements compared."""
        n = len(items)
        if n < 2:
            return
        size = self.walk(items if isinstance(items, list) else list(items))
        self.charge_compares(size * (max(1, math.ceil(math.log2(n))) if sort else 1))

    def collisions(self, s):
        """The largest number of distinct elements of set ``s`` that share one hash value."""
        known = self.sets.get(id(s))
        if known is not None and known[0] is s:
            return known[1]
        return self.hash_groups(list(s))[0]

    def hash_groups(self, items):
        """(largest group, comparisons) of distinct values sharing a hash value among ``items``, charged.
        Building a set compares each new element with every distinct element of equal hash already
        there, so a group of d costs about d^2 / 2 comparisons; sets of integers that differ by
        multiples of 2^61 - 1 (or crafted tuples) make such groups. The groups are formed by exact hash
        value (as bytes: a dict keyed by them cannot be made to collide), and distinct values are
        counted with byte keys of the values."""
        groups, memo = {}, {}
        size = 0
        for x in items:
            size += self.walk(x, memo)  # also refuses values nested too deeply to hash
            groups.setdefault(hash(x).to_bytes(8, "little", signed=True), []).append(x)
        largest, compares = 1, 0
        for group in groups.values():
            if len(group) > 1:
                self.tick(len(group) // WALK_PER_UNIT)
                d = len({_value_key(x) for x in group})
                largest = max(largest, d)
                compares += d * (d - 1) // 2 * max(1, size // max(1, len(items)))
        self.charge_compares(compares)
        return largest, compares

    def make_set(self, items):
        """``set(items)``, after charging the hashing and any hash collisions."""
        items = list(items)
        largest = self.hash_groups(items)[0] if items else 1
        out = self.check(set(items))
        self.sets[id(out)] = (out, largest)
        return out

    def set_binop(self, kind, a, b):
        """``a | b``, ``a & b``, ``a - b``, ``a ^ b`` of sets: charged like building a set of both."""
        out = _BINOPS[kind](a, b)
        largest = self.hash_groups(list(a) + list(b))[0]
        self.sets[id(out)] = (out, largest)
        return self.check(out)

    def write(self, text):
        room = MAX_OUTPUT - self.out_len
        if len(text) > room:
            text = text[: max(room, 0)]
            self.truncated = True
        self.out.append(text)
        self.out_len += len(text)

    def check(self, value):
        """Bound a freshly computed value and charge for its size."""
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, (int, Fraction)):
            bits = _bits(value)
            if bits > MAX_INT_BITS:
                raise _too_big(bits)
            self.tick(bits >> 6)
        elif isinstance(value, (str, list, tuple, set)):
            if len(value) > MAX_LEN:
                raise CalcError(f"sequence too long ({len(value):,} > {MAX_LEN:,} elements)")
            self.tick(len(value))
        return value

    def render(self, value, limit, quote=False, depth=0):
        """str() of a value, built piecewise and cut at ``limit`` characters."""
        if depth > MAX_DEPTH:
            raise CalcError("value nested too deeply to print")
        if isinstance(value, str):
            text = repr(value) if quote else value
            return text[:limit]
        if isinstance(value, (list, tuple, set)):
            if isinstance(value, set) and not value:
                return "set()"
            left, right = {list: "[]", tuple: "()", set: "{}"}[type(value)]
            parts, size = [], 1
            for item in value:
                self.tick()
                piece = self.render(item, limit - size, True, depth + 1)
                parts.append(piece)
                size += len(piece) + 2
                if size >= limit:
                    break
            tail = "," if isinstance(value, tuple) and len(value) == 1 else ""
            return (left + ", ".join(parts) + tail + right)[:limit]
        if isinstance(value, range):
            return repr(value)[:limit]
        if isinstance(value, (int, Fraction)):
            words = _bits(value) >> 6
            self.tick(words + words * words // 128)  # int -> decimal text is quadratic in the digits
        else:
            self.tick()
        return str(value)[:limit]

    # -- iteration -----------------------------------------------------------------------------

    def iterate(self, value):
        if isinstance(value, (list, tuple, str, range)):
            seq = list(value) if isinstance(value, list) else value  # a list may be mutated while looped
        elif isinstance(value, set):
            seq = list(value)
        else:
            raise CalcError(f"cannot iterate over {_type_name(value)}")
        for item in seq:
            self.tick()
            yield item

    def materialize(self, value):
        if isinstance(value, range) and len(value) > MAX_LEN:
            raise CalcError(f"range too long to build ({len(value):,} > {MAX_LEN:,} elements)")
        return [x for x in self.iterate(value)]

    # -- statements ----------------------------------------------------------------------------

    def run(self, tree):
        body = tree.body
        for i, stmt in enumerate(body):
            if i == len(body) - 1 and isinstance(stmt, ast.Expr):
                self.line = stmt.lineno
                value = self.eval(stmt.value)
                is_print = isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Name) \
                    and stmt.value.func.id == "print"
                if value is not None and not is_print:
                    self.write(self.render(value, MAX_OUTPUT, quote=True) + "\n")
            else:
                self.exec(stmt)

    def exec_block(self, body):
        for stmt in body:
            self.exec(stmt)

    def exec(self, node):
        self.tick()
        self.line = getattr(node, "lineno", self.line)
        kind = type(node)
        if kind is ast.Expr:
            self.eval(node.value)
        elif kind is ast.Assign:
            value = self.eval(node.value)
            for target in node.targets:
                self.assign(target, value)
        elif kind is ast.AugAssign:
            current = self.eval(_load(node.target))
            self.assign(node.target, self.binop(node.op, current, self.eval(node.value)))
        elif kind is ast.AnnAssign and node.value is not None:
            self.assign(node.target, self.eval(node.value))
        elif kind is ast.If:
            self.exec_block(node.body if self.truth(self.eval(node.test)) else node.orelse)
        elif kind is ast.For:
            self.loop_for(node)
        elif kind is ast.While:
            self.loop_while(node)
        elif kind is ast.Break:
            raise _Break()
        elif kind is ast.Continue:
            raise _Continue()
        elif kind is ast.Pass:
            pass
        elif kind in (ast.Import, ast.ImportFrom):
            raise CalcError("imports are not allowed; math functions are built in (sqrt(2) or math.sqrt(2)), "
                            "and so is Fraction")
        elif kind in (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef):
            raise CalcError("defining functions or classes is not supported; write the computation inline")
        else:
            raise CalcError(f"'{kind.__name__}' statements are not supported by the calculator")

    def loop_for(self, node):
        if node.orelse:
            raise CalcError("for ... else is not supported")
        for item in self.iterate(self.eval(node.iter)):
            self.assign(node.target, item)
            if not self.loop_body(node.body):
                break

    def loop_while(self, node):
        if node.orelse:
            raise CalcError("while ... else is not supported")
        while self.truth(self.eval(node.test)):
            self.tick()
            if not self.loop_body(node.body):
                break

    def loop_body(self, body):
        """Run one iteration; False if it hit ``break``."""
        try:
            self.exec_block(body)
        except _Break:
            return False
        except _Continue:
            pass
        return True

    def assign(self, target, value):
        kind = type(target)
        if kind is ast.Name:
            _check_name(target.id)
            self.vars[target.id] = value
        elif kind in (ast.Tuple, ast.List):
            items = self.materialize(value) if not isinstance(value, (list, tuple)) else list(value)
            if len(items) != len(target.elts):
                raise CalcError(f"cannot unpack {len(items)} values into {len(target.elts)} names")
            for t, v in zip(target.elts, items):
                self.assign(t, v)
        elif kind is ast.Subscript:
            obj = self.eval(target.value)
            if not isinstance(obj, list):
                raise CalcError(f"item assignment needs a list, not {_type_name(obj)}")
            index = self.eval(target.slice)
            if isinstance(index, slice):
                raise CalcError("slice assignment is not supported")
            if not isinstance(index, int):
                raise CalcError("list indices must be integers")
            obj[index] = value
        else:
            raise CalcError("can only assign to names, tuples of names, or list items")

    # -- expressions ---------------------------------------------------------------------------

    def eval(self, node):
        self.steps += 1  # tick(), inlined: this is the interpreter's hot path
        if self.steps > MAX_STEPS:
            self.tick(0)
        if self.depth >= MAX_DEPTH:
            raise CalcError("expression nested too deeply")
        method = _EXPR.get(type(node))
        if method is None:
            raise CalcError(f"'{type(node).__name__}' expressions are not supported by the calculator")
        self.depth += 1
        try:
            return method(self, node)
        finally:
            self.depth -= 1

    def truth(self, value):
        return bool(value)

    def e_constant(self, node):
        value = node.value
        if isinstance(value, (bool, int, float, complex, str)) or value is None:
            return self.check(value)
        raise CalcError(f"{type(value).__name__} literals are not supported")

    def e_name(self, node):
        name = node.id
        _check_name(name)
        if name in self.vars:
            return self.vars[name]
        if name in FUNCTIONS:
            return FUNCTIONS[name]
        if name in MATH:
            return MATH[name]
        if name == "math":
            return MATH_NS
        hint = " (the calculator has no files, modules or introspection)" if name in _BLOCKED_BUILTINS else ""
        raise CalcError(f"name '{name}' is not defined{hint}")

    def e_binop(self, node):
        return self.binop(node.op, self.eval(node.left), self.eval(node.right))

    def binop(self, op, a, b):
        kind = type(op)
        if kind is ast.Pow:
            # An integral Fraction exponent is an int exponent, so that it is sized like one; the result
            # type is Python's (int ** Fraction(n >= 0) is an int, otherwise a Fraction).
            if isinstance(b, Fraction) and b.denominator == 1 and isinstance(a, (int, Fraction)):
                n = b.numerator
                base = a if isinstance(a, Fraction) or n >= 0 else Fraction(a)
                return self.binop(op, base, n)
            # Exact results (int ** non-negative int, Fraction ** int) are sized before computing;
            # 0, 1 and -1 stay small; int ** negative int is a float.
            exact = isinstance(b, int) and (
                (isinstance(a, int) and b >= 0) or isinstance(a, Fraction)
            )
            if exact and a not in (0, 1, -1):
                bits = _log2(a) * abs(b)
                if bits > MAX_INT_BITS:
                    raise _too_big(bits)
            return self.check(a ** b)
        if kind is ast.Mult:
            if isinstance(a, (str, list, tuple)) or isinstance(b, (str, list, tuple)):
                seq, n = (a, b) if isinstance(a, (str, list, tuple)) else (b, a)
                if isinstance(n, int) and len(seq) * max(n, 0) > MAX_LEN:
                    raise CalcError(f"sequence too long ({len(seq) * n:,} > {MAX_LEN:,} elements)")
            elif isinstance(a, (int, Fraction)) and isinstance(b, (int, Fraction)):
                bits = _bits(a) + _bits(b)
                if bits > MAX_INT_BITS + 1:
                    raise _too_big(bits)
            return self.check(a * b)
        if kind is ast.LShift:
            if isinstance(a, int) and isinstance(b, int) and b > 0 and a and _bits(a) + b > MAX_INT_BITS:
                raise _too_big(_bits(a) + b)
            return self.check(a << b)
        if kind is ast.Mod and isinstance(a, str):
            raise CalcError("%-formatting of strings is not supported; use f-strings")
        if kind is ast.Add and isinstance(a, (str, list, tuple)) and isinstance(b, (str, list, tuple)):
            if len(a) + len(b) > MAX_LEN:
                raise CalcError(f"sequence too long ({len(a) + len(b):,} > {MAX_LEN:,} elements)")
        if kind in (ast.FloorDiv, ast.Mod):
            self.charge_division(a, b)
        if kind in (ast.BitOr, ast.BitAnd, ast.Sub, ast.BitXor) and isinstance(a, set) and isinstance(b, set):
            return self.set_binop(kind, a, b)
        fn = _BINOPS.get(kind)
        if fn is None:
            raise CalcError(f"operator {kind.__name__} is not supported")
        return self.check(fn(a, b))

    def charge_division(self, a, b):
        """Big-integer division costs about (words of a - words of b) x words of b."""
        if isinstance(a, (int, Fraction)) and isinstance(b, (int, Fraction)):
            wa, wb = _bits(a) >> 6, _bits(b) >> 6
            self.tick(max(0, wa - wb + 1) * wb // 64)

    def e_unaryop(self, node):
        value = self.eval(node.operand)
        kind = type(node.op)
        if kind is ast.Not:
            return not self.truth(value)
        if kind is ast.USub:
            return self.check(-value)
        if kind is ast.UAdd:
            return self.check(+value)
        return self.check(~value)

    def e_boolop(self, node):
        is_and = isinstance(node.op, ast.And)
        value = None
        for operand in node.values:
            value = self.eval(operand)
            if self.truth(value) != is_and:
                return value
        return value

    def e_compare(self, node):
        left = self.eval(node.left)
        for op, comparator in zip(node.ops, node.comparators):
            right = self.eval(comparator)
            kind = type(op)
            if kind not in _COMPARE:
                raise CalcError(f"comparison {kind.__name__} is not supported")
            if kind in (ast.In, ast.NotIn):
                result = self.contains(left, right) == (kind is ast.In)
            elif kind in (ast.Is, ast.IsNot):
                result = _COMPARE[kind](left, right)
            else:
                result = self.compare(kind, left, right)
            if not result:
                return False
            left = right
        return True

    def e_ifexp(self, node):
        return self.eval(node.body) if self.truth(self.eval(node.test)) else self.eval(node.orelse)

    def e_call(self, node):
        fn = self.eval(node.func)
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise CalcError("*args in calls is not supported")
        args = [self.eval(a) for a in node.args]
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise CalcError("**kwargs in calls is not supported")
            kwargs[kw.arg] = self.eval(kw.value)
        if isinstance(fn, _Method):
            if kwargs:
                raise CalcError(f"list.{fn.name} takes no keyword arguments")
            return self.call_method(fn, args)
        if not isinstance(fn, _Fn):
            raise CalcError(f"{_type_name(fn)} is not callable")
        bad = set(kwargs) - fn.keywords
        if bad:
            raise CalcError(f"{fn.name}() got unexpected keyword argument(s) {sorted(bad)}")
        return self.check(fn.impl(self, *args, **kwargs))

    def call_method(self, method, args):
        obj, name = method.obj, method.name
        if name in ("append", "insert") and len(obj) + 1 > MAX_LEN:
            raise CalcError(f"list too long (> {MAX_LEN:,} elements)")
        if name == "extend":
            if len(args) != 1:
                raise CalcError("extend() takes exactly one argument")
            items = self.materialize(args[0])
            if len(obj) + len(items) > MAX_LEN:
                raise CalcError(f"list too long (> {MAX_LEN:,} elements)")
            obj.extend(items)
            return None
        if name == "sort":
            if args:
                raise CalcError("sort() takes no arguments here")
            self.tick(len(obj))
            self.charge_ordering(obj, sort=True)
        elif name in ("count", "index") and args:
            self.charge_compares(self.scan_cost(args[0], obj))
        elif name in ("insert", "reverse") or (name == "pop" and args):
            self.tick((len(obj) >> 11) + 1)  # elements moved
        return getattr(obj, name)(*args)

    def e_attribute(self, node):
        attr = node.attr
        if attr.startswith("_"):
            raise CalcError(f"attribute '{attr}' is not allowed")
        value = self.eval(node.value)
        if value is MATH_NS:
            if attr in MATH:
                return MATH[attr]
            raise CalcError(f"math.{attr} is not available; available: {', '.join(sorted(MATH))}")
        if isinstance(value, list) and attr in _LIST_METHODS:
            return _Method(value, attr)
        if isinstance(value, (int, Fraction)) and not isinstance(value, bool) and attr in ("numerator", "denominator"):
            return getattr(value, attr)
        if isinstance(value, (int, float, complex)) and attr in ("real", "imag"):
            return getattr(value, attr)
        raise CalcError(f"attribute '.{attr}' of {_type_name(value)} is not available")

    def e_subscript(self, node):
        value = self.eval(node.value)
        index = self.eval(node.slice)
        if not isinstance(value, (list, tuple, str, range)):
            raise CalcError(f"{_type_name(value)} is not subscriptable")
        if not isinstance(index, (int, slice)):
            raise CalcError("indices must be integers or slices")
        return self.check(value[index])

    def e_slice(self, node):
        parts = [None if p is None else self.eval(p) for p in (node.lower, node.upper, node.step)]
        if any(p is not None and not isinstance(p, int) for p in parts):
            raise CalcError("slice bounds must be integers")
        return slice(*parts)

    def e_list(self, node):
        return self.check([self.eval(e) for e in _plain_elts(node)])

    def e_tuple(self, node):
        return self.check(tuple(self.eval(e) for e in _plain_elts(node)))

    def e_set(self, node):
        return self.make_set([self.eval(e) for e in _plain_elts(node)])

    def comprehension(self, generators, element, out):
        saved = dict(self.vars)

        def walk(i):
            if i == len(generators):
                out.append(self.eval(element))
                if len(out) > MAX_LEN:
                    raise CalcError(f"comprehension too long (> {MAX_LEN:,} elements)")
                return
            gen = generators[i]
            if gen.is_async:
                raise CalcError("async comprehensions are not supported")
            for item in self.iterate(self.eval(gen.iter)):
                self.assign(gen.target, item)
                if all(self.truth(self.eval(c)) for c in gen.ifs):
                    walk(i + 1)

        try:
            walk(0)
        finally:
            self.vars = saved  # comprehension variables do not leak, as in Python 3
        return out

    def e_listcomp(self, node):
        return self.check(self.comprehension(node.generators, node.elt, []))

    def e_setcomp(self, node):
        return self.make_set(self.comprehension(node.generators, node.elt, []))

    def e_joinedstr(self, node):
        pieces = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                pieces.append(str(part.value))
                continue
            value = self.eval(part.value)
            spec = self.e_joinedstr(part.format_spec) if part.format_spec is not None else ""
            if part.conversion == ord("r"):
                value = self.render(value, MAX_LEN, quote=True)
            elif part.conversion in (ord("s"), ord("a")):
                value = self.render(value, MAX_LEN)
            if spec:
                if not _SAFE_SPEC.fullmatch(spec):
                    raise CalcError(f"format spec {spec[:20]!r} is not supported (widths and precisions up to 3 digits)")
                if not isinstance(value, (int, float, Fraction, str)):
                    raise CalcError(f"format specs apply to numbers and strings, not {_type_name(value)}")
                pieces.append(format(float(value) if isinstance(value, Fraction) else value, spec))
            else:
                pieces.append(self.render(value, MAX_LEN))
            if sum(len(p) for p in pieces) > MAX_LEN:
                raise CalcError("string too long")
        return self.check("".join(pieces))


_EXPR = {
    ast.Constant: _Interp.e_constant,
    ast.Name: _Interp.e_name,
    ast.BinOp: _Interp.e_binop,
    ast.UnaryOp: _Interp.e_unaryop,
    ast.BoolOp: _Interp.e_boolop,
    ast.Compare: _Interp.e_compare,
    ast.IfExp: _Interp.e_ifexp,
    ast.Call: _Interp.e_call,
    ast.Attribute: _Interp.e_attribute,
    ast.Subscript: _Interp.e_subscript,
    ast.Slice: _Interp.e_slice,
    ast.List: _Interp.e_list,
    ast.Tuple: _Interp.e_tuple,
    ast.Set: _Interp.e_set,
    ast.ListComp: _Interp.e_listcomp,
    ast.GeneratorExp: _Interp.e_listcomp,  # eager: same values, bounded like a list
    ast.SetComp: _Interp.e_setcomp,
    ast.JoinedStr: _Interp.e_joinedstr,
}

_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.RShift: lambda a, b: a >> b,
    ast.BitAnd: lambda a, b: a & b,
    ast.BitOr: lambda a, b: a | b,
    ast.BitXor: lambda a, b: a ^ b,
}

_COMPARE = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
}

_LIST_METHODS = frozenset({"append", "extend", "pop", "insert", "sort", "reverse", "count", "index"})
_BLOCKED_BUILTINS = frozenset({
    "open", "exec", "eval", "compile", "__import__", "getattr", "setattr", "delattr", "globals", "locals",
    "vars", "dir", "type", "object", "input", "help", "breakpoint", "exit", "quit", "os", "sys", "subprocess",
})
# [[fill]align][sign][#][0][width][,|_][.precision][type], widths and precisions of at most 3 digits
_SAFE_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?#?0?\d{0,3}[,_]?(?:\.\d{1,3})?[bcdeEfFgGnosxX%]?")


def _in_range(x, r):
    """``x in r`` in constant time (CPython scans a range element by element for anything but an int)."""
    if isinstance(x, bool) or isinstance(x, int):
        return x in r
    if isinstance(x, complex):
        if x.imag != 0:
            return False
        x = x.real
    if isinstance(x, float):
        if not math.isfinite(x) or x != int(x):
            return False
        return int(x) in r
    if isinstance(x, Fraction):
        return x.denominator == 1 and x.numerator in r
    return False  # no other type equals an int


def _value_key(x):
    """Bytes that differ for values that differ (equal numbers of different types may differ too, which
    only over-counts): used to count distinct values without hashing them."""
    if isinstance(x, bool):
        x = int(x)
    if isinstance(x, int):
        return b"i" + x.to_bytes((x.bit_length() + 8) // 8 + 1, "little", signed=True)
    if isinstance(x, Fraction):
        return b"q" + _value_key(x.numerator) + b"/" + _value_key(x.denominator)
    if isinstance(x, float):
        return b"f" + (x.hex() if x == x else f"nan{id(x)}").encode()
    if isinstance(x, complex):
        return b"c" + _value_key(x.real) + _value_key(x.imag)
    if isinstance(x, str):
        data = x.encode("utf-8", "surrogatepass")
        return b"s" + len(data).to_bytes(8, "little") + data
    if isinstance(x, tuple):
        parts = [_value_key(v) for v in x]
        return b"(" + b"".join(len(p).to_bytes(8, "little") + p for p in parts) + b")"
    if isinstance(x, range):
        return b"r" + repr((len(x), x.start if len(x) else 0, x.step if len(x) > 1 else 0)).encode()
    return b"o" + repr(x).encode()[:64] + str(id(x)).encode()


def _type_name(value):
    if isinstance(value, _Fn):
        return f"function {value.name}"
    if value is MATH_NS:
        return "the math module"
    return f"a value of type {type(value).__name__}"


def _check_name(name):
    if name.startswith("__"):
        raise CalcError(f"names starting with '__' are not allowed ({name})")


def _load(target):
    """The expression that reads an augmented-assignment target."""
    if isinstance(target, ast.Name):
        return ast.Name(id=target.id, ctx=ast.Load())
    if isinstance(target, ast.Subscript):
        return ast.Subscript(value=target.value, slice=target.slice, ctx=ast.Load())
    raise CalcError("augmented assignment needs a name or a list item")


def _plain_elts(node):
    if any(isinstance(e, ast.Starred) for e in node.elts):
        raise CalcError("* unpacking in literals is not supported")
    return node.elts


# -- functions ---------------------------------------------------------------------------------


def _print(it, *args, sep=" ", end="\n"):
    if not isinstance(sep, str) or not isinstance(end, str):
        raise CalcError("print(): sep and end must be strings")
    it.write(sep.join(it.render(a, MAX_OUTPUT) for a in args) + end)
    return None


def _aggregate(fn):
    def impl(it, *args):
        if len(args) == 1:
            items = it.materialize(args[0])
        else:
            items = list(args)
        if not items:
            raise CalcError(f"{fn.__name__}() of an empty sequence")
        it.charge_ordering(items, sort=False)
        return fn(items)

    return impl


def _sum(it, iterable, start=0):
    total = start
    add = ast.Add()
    for x in it.iterate(iterable):
        if type(total) is int and type(x) is int:
            total = it.check(total + x)
        else:
            total = it.binop(add, total, x)  # bounded and charged like +: sums of lists or strings too
    return total


def _prod(it, iterable, start=1):
    total = start
    for x in it.iterate(iterable):
        total = it.binop(ast.Mult(), total, x)
    return total


def _round(it, x, ndigits=None):
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int) or abs(ndigits) > 1000:
        raise CalcError("round(): ndigits must be an integer between -1000 and 1000")
    return round(x, ndigits)


def _pow(it, base, exp, mod=None):
    if mod is None:
        return it.binop(ast.Pow(), base, exp)
    if all(isinstance(x, int) for x in (base, exp, mod)) and mod:
        # square-and-multiply: bits(exp) steps, each a product and a division of mod-sized numbers
        words = (_bits(mod) >> 6) + 1
        it.tick(_bits(exp) * words * words // 32 + (_bits(base) >> 6) * words // 64)
    return pow(base, exp, mod)


def _divmod(it, a, b):
    it.charge_division(a, b)
    return divmod(a, b)


def _int(it, x=0, base=None):
    if isinstance(x, str) and len(x) > 5000:
        raise CalcError("int(): string too long")
    return int(x) if base is None else int(x, base)


def _str(it, x=""):
    return it.render(x, MAX_LEN + 1)


def _len(it, x):
    if not isinstance(x, (list, tuple, str, set, range)):
        raise CalcError(f"len() of {_type_name(x)}")
    return len(x)


def _lcm(it, *args):
    if sum(_bits(a) for a in args if isinstance(a, int)) > 2 * MAX_INT_BITS:
        raise _too_big(sum(_bits(a) for a in args if isinstance(a, int)))
    return math.lcm(*args)


def _range(it, *args):
    if not all(isinstance(a, int) for a in args) or not 1 <= len(args) <= 3:
        raise CalcError("range() takes 1 to 3 integers")
    return range(*args)


def _sorted(it, iterable, reverse=False):
    items = it.materialize(iterable)
    it.tick(len(items))
    it.charge_ordering(items, sort=True)
    return sorted(items, reverse=bool(reverse))


def _enumerate(it, iterable, start=0):
    return [(start + i, x) for i, x in enumerate(it.materialize(iterable))]


def _zip(it, *iterables):
    return list(zip(*(it.materialize(i) for i in iterables)))


def _factorial(it, n):
    if isinstance(n, int) and n > 20 and _lgamma_bits(n) > MAX_INT_BITS:
        raise _too_big(_lgamma_bits(n))
    return math.factorial(n)


def _comb(it, n, k):
    if isinstance(n, int) and isinstance(k, int) and 0 <= k <= n and n > 64:
        bits = _lgamma_bits(n) - _lgamma_bits(k) - _lgamma_bits(n - k)
        if bits > MAX_INT_BITS:
            raise _too_big(bits)
        it.tick(min(k, n - k))
    return math.comb(n, k)


def _perm(it, n, k=None):
    if isinstance(n, int) and n > 64 and (k is None or (isinstance(k, int) and 0 <= k <= n)):
        bits = _lgamma_bits(n) - (0 if k is None else _lgamma_bits(n - k))
        if bits > MAX_INT_BITS:
            raise _too_big(bits)
        it.tick(n if k is None else k)
    return math.perm(n, k)


_EXPONENT = re.compile(r"[eE]\s*([+-]?)\s*0*(\d+)")


def _fraction(it, a=0, b=None):
    if isinstance(a, str):
        if len(a) > 200:
            raise CalcError("Fraction(): string too long")
        m = _EXPONENT.search(a)
        if m and int(m.group(2)) > MAX_EXPONENT_DIGITS:  # at most 200 characters: int() of them is cheap
            raise CalcError(f"Fraction(): exponent too large (at most {MAX_EXPONENT_DIGITS:,} digits)")
    return Fraction(a) if b is None else Fraction(a, b)


def _plain(fn):
    return lambda it, *args: fn(*args)


FUNCTIONS = {
    name: _Fn(name, impl, keywords)
    for name, impl, keywords in [
        ("print", _print, ("sep", "end")),
        ("abs", _plain(abs), ()),
        ("min", _aggregate(min), ()),
        ("max", _aggregate(max), ()),
        ("sum", _sum, ()),
        ("round", _round, ()),
        ("pow", _pow, ()),
        ("divmod", _divmod, ()),
        ("int", _int, ()),
        ("float", _plain(float), ()),
        ("bool", _plain(bool), ()),
        ("str", _str, ()),
        ("len", _len, ()),
        ("range", _range, ()),
        ("list", lambda it, x=(): it.materialize(x), ()),
        ("tuple", lambda it, x=(): tuple(it.materialize(x)), ()),
        ("set", lambda it, x=(): it.make_set(it.materialize(x)), ()),
        ("sorted", _sorted, ("reverse",)),
        ("reversed", lambda it, x: list(reversed(it.materialize(x))), ()),
        ("enumerate", _enumerate, ()),
        ("zip", _zip, ()),
        ("all", lambda it, x: all(it.truth(v) for v in it.iterate(x)), ()),
        ("any", lambda it, x: any(it.truth(v) for v in it.iterate(x)), ()),
        ("Fraction", _fraction, ()),
    ]
}

MATH = {name: _Fn(name, _plain(getattr(math, name))) for name in (
    "sqrt", "isqrt", "exp", "log", "log2", "log10", "sin", "cos", "tan", "asin", "acos", "atan", "atan2",
    "sinh", "cosh", "tanh", "hypot", "degrees", "radians", "floor", "ceil", "trunc", "fabs", "gcd",
    "isclose", "copysign", "fmod", "isfinite", "isinf", "isnan",
)}
MATH.update(
    factorial=_Fn("factorial", _factorial),
    comb=_Fn("comb", _comb),
    perm=_Fn("perm", _perm),
    prod=_Fn("prod", _prod),
    lcm=_Fn("lcm", _lcm),
    pi=math.pi,
    e=math.e,
    tau=math.tau,
    inf=math.inf,
    nan=math.nan,
)


def run(code):
    """Run calculator code; return what it printed (and the value of a final bare expression), or
    the output so far followed by ``Error: ...``. Never raises."""
    if not isinstance(code, str):
        return "Error: the code must be text"
    if len(code) > MAX_CODE_CHARS:
        return f"Error: code too long ({len(code):,} > {MAX_CODE_CHARS:,} characters)"
    try:
        tree = ast.parse(code, mode="exec")
    except SyntaxError as e:
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    except RecursionError:
        return "Error: the code is nested too deeply to parse"
    except (ValueError, MemoryError, OverflowError) as e:
        return f"Error: the code could not be parsed ({type(e).__name__})"
    it = _Interp()
    error = None
    try:
        it.run(tree)
    except CalcError as e:
        error = f"Error (line {it.line}): {e}"
    except (_Break, _Continue):
        error = f"Error (line {it.line}): break/continue outside a loop"
    except RecursionError:
        error = f"Error (line {it.line}): nested too deeply"
    except MemoryError:
        error = f"Error (line {it.line}): out of memory"
    except Exception as e:  # arithmetic and type errors of the model's code
        error = f"{type(e).__name__} (line {it.line}): {str(e)[:300]}"
    text = "".join(it.out)
    if it.truncated:
        text += f"\n[output truncated at {MAX_OUTPUT:,} characters]"
    if error is not None:
        text = (text.rstrip("\n") + "\n" if text else "") + error
    return text if text.strip() else "(no output; use print(...) to show values)"


HANDLERS = {"run": run}

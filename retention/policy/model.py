"""The rule-pack model: what a pack may say, checked field by field.

The YAML reference lives in docs/rules.md; this module is its executable
form. Models forbid unknown keys so that a typo is an error, not a silently
ignored rule.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import pendulum
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from retention.policy import takes_effect
from retention.policy.rowfilter import ColumnTest, RowFilter, parse_where
from retention.timing.clock import AfterFrom, Period, Schedule, WorkingDays, YearEnd, iana_zone

STATES: tuple[str, ...] = ("active", "inactive", "archived", "purged")
"""Lifecycle states in their only allowed order."""

ClockType = Literal["timestamptz", "timestamp", "date", "epoch", "epoch_text"]
State = Literal["inactive", "archived", "purged"]
MAX_BATCH_SIZE = 100_000
"""Records per transaction at most: a batch's keys travel as one statement's parameters."""

ActionName = Literal["deactivate", "archive", "anonymise", "delete", "drop_partition"]

MAX_BASIS = 2000
"""Characters of a legal basis at most: it is copied into every ledger entry of its rule."""
Basis = Annotated[str, Field(max_length=MAX_BASIS)]


def _parse_period(value: Any) -> Period:
    if isinstance(value, Period):
        return value
    return Period.parse(value)


def _parse_year_end(value: Any) -> YearEnd:
    if isinstance(value, YearEnd):
        return value
    return YearEnd.parse(value)


PeriodField = Annotated[Period, BeforeValidator(_parse_period), PlainSerializer(str)]
YearEndField = Annotated[
    YearEnd,
    BeforeValidator(_parse_year_end),
    PlainSerializer(lambda y: f"{y.month:02d}-{y.day:02d}"),
]


def _check_timezone(value: str) -> str:
    """An IANA zone name (see retention.timing.clock.iana_zone) that pendulum can load."""
    iana_zone(value)
    try:
        pendulum.timezone(value)
    except Exception as exc:  # pendulum raises several types for bad names
        raise ValueError(f"unknown timezone {value!r}; use an IANA name such as Europe/Paris or UTC") from exc
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Keys added to the pack language after 0.1.0: left out of the dump (and so
    # of the pack's digest) while unset, so a pack that does not use them keeps
    # the digest its ledger entries already name.
    _added_later: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _without_unset_new_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in self._added_later:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Clock(_Strict):
    """Where a retention period runs from: a column, or the max over a related table."""

    column: str
    type: ClockType = "timestamptz"
    timezone: str | None = Field(default=None, description="Timezone of a naive `timestamp` column (default UTC).")
    aggregate: Literal["max"] | None = None
    table: str | None = None
    on: str | None = Field(default=None, description="Column of the related table naming the record.")
    references: str | None = Field(
        default=None,
        description="Column of the dataset the related table points at (default its key).",
    )
    where: dict[str, Any] | None = Field(
        default=None,
        description="Which related rows count: column conditions as in a dataset's where (docs/rules.md).",
    )
    expires: StrictBool | None = Field(
        default=None,
        description="The value is when the record stops being needed: due at that instant, no period.",
    )
    # Issue 26 clause 1: what an unreadable related row does to an aggregate clock.
    invalid_rows: Literal["strict", "ignore"] | None = Field(
        default=None,
        description="strict (default): one unreadable related row makes the clock invalid; "
        "ignore: the max of the readable rows, the others counted as ignored.",
    )

    _added_later = ("expires", "invalid_rows")

    _check_tz = field_validator("timezone")(lambda v: None if v is None else _check_timezone(v))

    @field_validator("where")
    @classmethod
    def _where_grammar(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # The same column conditions as a dataset's where; a related condition
        # inside an aggregate's filter would be a join inside a join, refused.
        if value is not None:
            if "related" in value:
                raise ValueError("@related: an aggregate clock's where takes column conditions only")
            parse_where(value)
        return value

    @property
    def related_tests(self) -> tuple[ColumnTest, ...]:
        """The parsed ``where`` of an aggregate clock: conditions on the related rows."""
        return () if self.where is None else parse_where(self.where).tests

    @property
    def ignores_invalid(self) -> bool:
        """Whether unreadable related rows are left out of the max instead of invalidating it."""
        return self.invalid_rows == "ignore"

    @model_validator(mode="after")
    def _coherent(self) -> Clock:
        if self.timezone is not None and self.type != "timestamp":
            raise ValueError(f"timezone applies only to naive 'timestamp' clocks, not to {self.type!r}")
        related = {
            "table": self.table,
            "on": self.on,
            "references": self.references,
            "where": self.where,
            "invalid_rows": self.invalid_rows,
        }
        if self.aggregate is None:
            extra = [k for k, v in related.items() if v is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply to aggregate clocks; add aggregate: max")
        elif self.table is None or self.on is None:
            raise ValueError("an aggregate clock needs table and on (the related table's key column)")
        if self.expires and self.type == "timestamp" and self.naive_timezone != "UTC":
            # A wall-clock reading in a zone with daylight saving time is reached
            # twice in the autumn and never in the spring: no single instant.
            raise ValueError(
                "an expiry clock of type 'timestamp' must be in UTC; use timestamptz for instants in other zones"
            )
        return self

    @property
    def is_expiry(self) -> bool:
        return bool(self.expires)

    @property
    def naive_timezone(self) -> str:
        return self.timezone or "UTC"

    def label(self) -> str:
        if self.aggregate:
            return f"{self.aggregate}({self.table}.{self.column})"
        return self.column


class Keep(_Strict):
    """One justification for keeping a record: a clock and its period."""

    clock: Clock
    period: PeriodField | None = None
    anchor: Literal["event", "financial_year_end"] = "event"
    basis: Basis | None = None

    _added_later = ("period",)  # always set before expiry clocks, so always in the digest then

    @model_validator(mode="after")
    def _period_or_expiry(self) -> Keep:
        if self.clock.is_expiry:
            if self.period is not None:
                raise ValueError(
                    "an expiry clock (expires: true) takes no period: the record is due at the clock's value; "
                    "delay the first lifecycle step with 'after' to keep it longer"
                )
            if self.anchor != "event":
                raise ValueError("an expiry clock (expires: true) cannot be anchored to the financial year end")
        elif self.period is None:
            raise ValueError("a keep rule needs 'period' (or a clock with expires: true)")
        return self

    @property
    def kept(self) -> Period:
        """The period run from the clock (none for an expiry clock)."""
        return self.period or Period()


MASK_STRATEGIES: tuple[str, ...] = (
    "null",
    "fixed",
    "hash",
    "redact",
    "truncate_date",
    "generalise",
)


_MASK_OPTIONS: dict[str, set[str]] = {
    "null": set(),
    "fixed": {"value"},
    "hash": set(),
    "redact": {"keep"},
    "truncate_date": {"to"},
    "generalise": {"chars"},
}
"""The options each strategy reads (redact reads ``chars`` too, with ``keep: first``)."""


class Mask(_Strict):
    """How one column is masked (see retention.engine.masking for the strategies)."""

    strategy: Literal["null", "fixed", "hash", "redact", "truncate_date", "generalise"]
    value: str | int | float | bool | None = None
    keep: Literal["domain", "last4", "first"] | None = None
    to: Literal["month", "year"] | None = None
    chars: int | None = Field(default=None, ge=0, le=1000, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if data is None:  # `email: null` in YAML names the null strategy
            return {"strategy": "null"}
        if isinstance(data, str):
            return {"strategy": data}
        if isinstance(data, dict) and "strategy" in data and data["strategy"] is None:
            # `strategy: null` is YAML's null, which names the null strategy as the short form does.
            return {**data, "strategy": "null"}
        return data

    @model_validator(mode="after")
    def _options(self) -> Mask:
        needs = {"fixed": "value", "truncate_date": "to", "generalise": "chars", "redact": "keep"}
        option = needs.get(self.strategy)
        if option is not None and getattr(self, option) is None and self.strategy != "fixed":
            raise ValueError(f"strategy {self.strategy!r} needs option {option!r}")
        if self.strategy == "fixed" and "value" not in self.model_fields_set:
            raise ValueError("strategy 'fixed' needs option 'value'")
        # An option the strategy never reads would be a promise the mask does not keep
        # (`{strategy: hash, chars: 4}` hashes the whole value).
        uses = _MASK_OPTIONS[self.strategy] | (
            {"chars"} if (self.strategy, self.keep) == ("redact", "first") else set()
        )
        # An unset option and one written as null read alike (a dumped pack carries every key).
        given = {name for name in ("keep", "to", "chars") if getattr(self, name) is not None}
        given |= {"value"} if self.value is not None else set()
        unused = [name for name in ("value", "keep", "to", "chars") if name in given - uses]
        if unused:
            valid = ", ".join(sorted(uses)) or "none"
            raise ValueError(
                f"option {unused[0]!r} does not apply to strategy {self.strategy!r} (its options: {valid}); remove it"
            )
        return self


RECORD_STATE = "record_state"
"""The ledger's action for a step without one: the state is recorded in the engine's tables only."""

_ALLOWED_ACTIONS: dict[str, tuple[str, ...]] = {
    "inactive": ("deactivate",),
    "archived": ("archive",),
    "purged": ("delete", "anonymise", "drop_partition"),
}


class Step(_Strict):
    """Entering one lifecycle state: when, and what happens to the data."""

    to: State
    after: PeriodField = Field(default_factory=Period)
    action: ActionName | None = None
    set: dict[str, str | int | float | bool | None] | None = None
    columns: list[str] | None = None
    then: Literal["delete", "anonymise"] | None = None
    mask: dict[str, Mask] | None = None
    basis: Basis | None = None
    after_from: AfterFrom | None = Field(
        default=None,
        description="What 'after' counts from: the previous state's end (default), the clock, or the entry day.",
    )

    _added_later = ("after_from",)

    @property
    def counted_from(self) -> AfterFrom:
        return self.after_from or "previous"

    @model_validator(mode="after")
    def _action_fits(self) -> Step:
        action = self.action
        if action is not None and action not in _ALLOWED_ACTIONS[self.to]:
            valid = ", ".join(_ALLOWED_ACTIONS[self.to])
            raise ValueError(f"action {action!r} cannot enter state {self.to!r}; valid: {valid}")
        if action == "deactivate" and not self.set:
            raise ValueError("action 'deactivate' needs 'set' with at least one column")
        if action == "archive":
            if not self.columns:
                raise ValueError("action 'archive' needs 'columns', the minimised payload to keep")
            if self.then is None:
                raise ValueError("action 'archive' needs 'then': delete or anonymise the source row")
            if self.then == "anonymise" and not self.mask:
                raise ValueError("archive with 'then: anonymise' needs 'mask'")
        if action == "anonymise" and not self.mask:
            raise ValueError("action 'anonymise' needs 'mask' naming each column's strategy")
        if self.set is not None and action != "deactivate":
            raise ValueError("'set' applies only to action 'deactivate'")
        if self.columns is not None and action != "archive":
            raise ValueError("'columns' applies only to action 'archive'")
        if self.then is not None and action != "archive":
            raise ValueError("'then' applies only to action 'archive'")
        if self.mask is not None and not (action == "anonymise" or (action == "archive" and self.then == "anonymise")):
            raise ValueError("'mask' applies only to 'anonymise' or to archive with 'then: anonymise'")
        return self


class Follow(_Strict):
    """Move with a leader record: when it enters a state, this dataset's rows follow.

    The leader record is the followed dataset's record whose key equals this
    row's ``via`` column; with ``by: email``, the followed dataset's record
    carrying this row's e-mail address (the greatest key when several do: a
    guest's reviews follow the guest's latest order); otherwise the record
    named by its subject key (the followed dataset is then the subject dataset).
    """

    dataset: str
    via: str | None = Field(default=None, description="Column of this table holding the leader record's key.")
    by: Literal["email"] | None = Field(
        default=None,
        description="Name the leader record by the e-mail identity both datasets declare (docs/rules.md, 'follows').",
    )
    on: dict[State, State] = Field(min_length=1)

    _added_later = ("via", "by")

    @model_validator(mode="after")
    def _one_link(self) -> Follow:
        if self.via is not None and self.by is not None:
            raise ValueError("@by: give 'via' (a column holding the leader's key) or 'by: email', not both")
        return self


class Hop(_Strict):
    """One join on the way from a record to its person: the ``table`` row whose ``key`` holds the value."""

    table: str
    key: str = Field(description="Column of the table equal to the value so far (a unique key).")
    column: str = Field(description="Column of that row holding the next value (the person's id at the end).")


class Subject(_Strict):
    """The person a record belongs to, read through joins (orders -> customer lookup -> user)."""

    column: str = Field(description="Column of the dataset's table the chain starts from.")
    through: list[Hop] = Field(min_length=1, max_length=5)


class ErasureMask(_Strict):
    """``on_erasure`` as a partial erasure (issue 26 clause 4): mask the personal columns now, keep the rest.

    "On erasure, keep the fields tax law requires and erase the rest": the
    record is not moved by the request; it keeps its own term (``keep_until``
    names the lifecycle state that term ends in) and is purged by its clock
    as usual.
    """

    mask: dict[str, Mask] = Field(min_length=1)
    keep_until: State = Field(description="The lifecycle state the record's own term ends in (its last, purged).")


class Guard(_Strict):
    """Mass-deletion guard: refuse a transition moving more than this much."""

    max_share: float = Field(default=0.2, gt=0, le=1, strict=True)
    max_count: int | None = Field(default=None, gt=0, strict=True)


class Dataset(_Strict):
    """One table of records of one kind and its lifecycle."""

    table: str
    schema_: str | None = Field(default=None, alias="schema")
    key: str
    subject_key: str | None = None
    subject: Subject | None = None
    email: str | Subject | None = Field(
        default=None,
        description="The person's e-mail address: a column, or a chain of joins (docs/rules.md, 'Identities').",
    )
    description: str | None = None
    basis: Basis | None = None
    keep: list[Keep] = Field(default_factory=list)
    lifecycle: list[Step] = Field(min_length=1)
    follows: Follow | None = None
    on_erasure: State | ErasureMask | None = None
    ledger: Literal["record", "summary"] = "record"
    review: StrictBool = False
    guard: Guard | None = None
    partitioned: StrictBool = False
    batch_size: int | None = Field(default=None, gt=0, le=MAX_BATCH_SIZE, strict=True)
    where: dict[str, Any] | None = Field(
        default=None,
        description="Which rows of the table are records of this dataset (docs/rules.md, 'where').",
    )
    review_columns: list[str] | None = Field(
        default=None,
        max_length=10,
        description="Non-personal columns a reviewer sees beside a batch (dates, amounts, types); review: true only.",
    )

    # Issue 26 clause 6: `where` scopes the clock and the lifecycle; erasure's
    # reach is every record of the dataset unless this says otherwise.
    erasure_where: dict[str, Any] | None = Field(
        default=None,
        description="Which rows an erasure request reaches (docs/rules.md, 'erasure_where'); default: the records.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    _added_later = ("where", "subject", "email", "review_columns", "erasure_where")

    @model_validator(mode="after")
    def _review_columns_not_personal(self) -> Dataset:
        """A reviewer sees these columns' values: never the columns the pack itself says name or mask a person."""
        if self.review_columns is None:
            return self
        if not self.review:
            raise ValueError("@review_columns: review_columns are shown to reviewers; they need review: true")
        personal = {self.key, self.subject_key, self.email if isinstance(self.email, str) else None}
        for identity in (self.subject, self.email):
            if identity is not None and not isinstance(identity, str):
                personal.add(identity.column)
        for step in self.lifecycle:
            personal.update((step.mask or {}).keys())
        for index, name in enumerate(self.review_columns):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,63}", name):
                raise ValueError(f"@review_columns.{index}: not a column name")
            if name in personal:
                raise ValueError(
                    f"@review_columns.{index}: {name} names or identifies the person (the key, an identity or a "
                    "masked column); a reviewer sees only columns that do not"
                )
        if len(set(self.review_columns)) != len(self.review_columns):
            raise ValueError("@review_columns: a column is named twice")
        return self

    def _partial_erasure_takes_effect(self, partial: ErasureMask, states: Sequence[str]) -> None:
        """Refuse a partial erasure that could not mask now and purge later (docs/rules.md, 'Partial erasure')."""
        at = "@on_erasure.keep_until"
        if partial.keep_until not in states:
            raise ValueError(
                f"{at}: state {partial.keep_until!r} is not in this dataset's lifecycle ({', '.join(states)})"
            )
        if partial.keep_until != "purged" or states[-1] != "purged":
            raise ValueError(
                f"{at}: keep_until names the state the record's own term ends in, the lifecycle's last step "
                f"to purged; with {partial.keep_until!r} the masked record would not be purged by its clock"
            )
        if not self.keep:
            raise ValueError(
                f"{at}: the dataset has no keep clock of its own, so the record has no term to be kept for; "
                "add a keep rule or use on_erasure: purged"
            )
        if self.erasure_where is not None:
            raise ValueError(
                "@erasure_where: a partial erasure keeps the record on its own term, but rows erasure_where "
                "reaches outside where have no term and would be kept masked for ever; remove erasure_where"
            )
        read = {self.key: "the key"}
        for rule in self.keep:
            read[rule.clock.references or self.key if rule.clock.aggregate else rule.clock.column] = "a clock"
        for row_filter in (self.row_filter,):
            if row_filter is not None:
                read.update({t.column: "where" for t in row_filter.tests})
                read.update({r.references or self.key: "where" for r in row_filter.related})
        if self.follows is not None:
            if self.follows.via is not None:
                read[self.follows.via] = "follows.via"
            elif self.follows.by == "email" and isinstance(self.email, str):
                read[self.email] = "follows by email"
            elif self.follows.by is None:
                link = self.subject_key or (self.subject.column if self.subject else None)
                if link is not None:
                    read[link] = "follows (the subject)"
        for column in partial.mask:
            if column in read:
                raise ValueError(
                    f"@on_erasure.mask.{column}: {read[column]} reads {column}; masking it would change which "
                    "records there are or when they are due, so the kept record could not reach its term"
                )

    @property
    def erasure_state(self) -> State | None:
        """The state an erasure request moves the subject's records to (None: none, or a partial erasure)."""
        return self.on_erasure if isinstance(self.on_erasure, str) else None

    @property
    def erasure_masking(self) -> ErasureMask | None:
        """The partial erasure: columns masked at once, the record kept to its term (issue 26 clause 4)."""
        return self.on_erasure if isinstance(self.on_erasure, ErasureMask) else None

    @property
    def has_subject(self) -> bool:
        """Whether records name a person, by a column (``subject_key``) or through joins (``subject``)."""
        return self.subject_key is not None or self.subject is not None

    @property
    def has_identity(self) -> bool:
        """Whether records name a person by any identity: the subject id or the e-mail address."""
        return self.has_subject or self.email is not None

    @field_validator("where")
    @classmethod
    def _where_grammar(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            parse_where(value)
        return value

    @property
    def row_filter(self) -> RowFilter | None:
        """The parsed ``where`` (None: every row of the table is a record)."""
        return None if self.where is None else parse_where(self.where)

    @field_validator("erasure_where")
    @classmethod
    def _erasure_where_grammar(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            parse_where(value)
        return value

    @property
    def erasure_filter(self) -> RowFilter | None:
        """The parsed ``erasure_where`` (None: an erasure reaches the dataset's records, ``where``)."""
        return None if self.erasure_where is None else parse_where(self.erasure_where)

    @model_validator(mode="after")
    def _lifecycle_order(self) -> Dataset:
        # Messages starting "@path: " are located at that sub-path by the loader.
        if self.subject is not None and self.subject_key is not None:
            raise ValueError("@subject: give 'subject_key' (a column) or 'subject' (through joins), not both")
        order = [STATES.index(step.to) for step in self.lifecycle]
        for i in range(1, len(order)):
            if order[i] == order[i - 1]:
                raise ValueError(f"@lifecycle.{i}.to: state {self.lifecycle[i].to!r} appears twice in the lifecycle")
            if order[i] < order[i - 1]:
                raise ValueError(
                    f"@lifecycle.{i}.to: state {self.lifecycle[i].to!r} cannot come after "
                    f"{self.lifecycle[i - 1].to!r}; states go active -> inactive -> archived -> purged"
                )
        states = [s.to for s in self.lifecycle]
        if isinstance(self.on_erasure, ErasureMask):
            self._partial_erasure_takes_effect(self.on_erasure, states)
        elif self.on_erasure is not None and self.on_erasure not in states:
            raise ValueError(
                f"@on_erasure: on_erasure state {self.on_erasure!r} is not in this dataset's "
                f"lifecycle ({', '.join(states)})"
            )
        if self.erasure_where is not None and self.on_erasure is None:
            raise ValueError(
                "@erasure_where: erasure_where says which rows an erasure reaches, but the dataset has no "
                "on_erasure; add on_erasure or remove erasure_where"
            )
        if not self.keep and self.follows is None:
            raise ValueError("a dataset needs 'keep' (clocks and periods) or 'follows'")
        for index, step in enumerate(self.lifecycle):
            if step.basis is None and self.basis is None:
                raise ValueError(
                    f"@lifecycle.{index}: state {step.to!r} has no legal basis; add 'basis' to the step or the dataset"
                )
        for index, step in enumerate(self.lifecycle):
            previous = self.lifecycle[index - 1].to if index else "active"
            where = f"@lifecycle.{index}"
            # A step into inactive may record the state alone (a table without a flag column).
            if step.action is None and step.to != "inactive" and not (step.to == "purged" and previous == "archived"):
                valid = ", ".join(_ALLOWED_ACTIONS[step.to])
                raise ValueError(f"{where}: state {step.to!r} needs an action; valid: {valid}")
            if step.to == "purged" and previous == "archived" and step.action not in (None, "delete"):
                raise ValueError(
                    f"{where}.action: purging an archived record deletes its archive payload; omit 'action'"
                )
            if step.after_from is not None and index == 0:
                raise ValueError(
                    f"{where}.after_from: the first step's 'after' runs from the end of the keep periods; "
                    "after_from applies to the steps after it"
                )
            if step.after_from == "clock" and len(self.keep) != 1:
                raise ValueError(
                    f"{where}.after_from: 'clock' needs exactly one keep rule (its clock is the event counted from)"
                )
            if step.action == "drop_partition" and not self.partitioned:
                raise ValueError(f"{where}.action: action 'drop_partition' needs 'partitioned: true' on the dataset")
            if step.action == "drop_partition" and self.where is not None:
                raise ValueError(
                    f"{where}.action: 'drop_partition' drops every row of a partition, so it cannot honour 'where'"
                )
        return self

    @model_validator(mode="after")
    def _every_clause_takes_effect(self) -> Dataset:
        """Refuse clauses the engine would accept and never act on (docs/rules.md, 'Clauses that take effect')."""
        takes_effect.refuse_idle_clauses(self)
        return self

    def dominated_keeps(self) -> list[tuple[int, int]]:
        """(rule, longer rule) pairs on the same clock and anchor: a check warning (policy/takes_effect.py)."""
        return takes_effect.dominated_keeps(self)

    @property
    def states(self) -> list[str]:
        """Used states in order, starting with active."""
        return ["active", *(s.to for s in self.lifecycle)]

    def step_to(self, state: str) -> Step:
        for step in self.lifecycle:
            if step.to == state:
                return step
        raise KeyError(state)

    def clock_start(self, rule: int, day: dt.date, pack: Pack) -> dt.date:
        """The event a keep rule's period runs from, for a clock on local ``day``.

        The day itself, the close of its financial year when anchored there, or
        for an expiry clock the day before its value (see :class:`Schedule`).
        """
        keep = self.keep[rule]
        if keep.clock.is_expiry:
            return day - dt.timedelta(days=1)
        return pack.financial_year_end.close_of(day) if keep.anchor == "financial_year_end" else day

    def basis_for(self, state: str) -> str:
        step = self.step_to(state)
        return step.basis or self.basis or ""

    def schedules(self, state: str, year_end: YearEnd) -> list[Schedule]:
        """One schedule per keep rule, from the clock to entering ``state``."""
        delays: list[Period] = []
        after_from: list[AfterFrom] = []
        for index, step in enumerate(self.lifecycle):
            if index:
                delays.append(step.after)
                after_from.append(step.counted_from)
            if step.to == state:
                break
        else:
            raise KeyError(state)
        # Entering the first state may itself wait after the retention ends.
        delays.insert(0, self.lifecycle[0].after)
        after_from.insert(0, "previous")
        result = []
        for rule in self.keep:
            result.append(
                Schedule(
                    period=rule.kept,
                    delays=tuple(delays),
                    year_end=year_end if rule.anchor == "financial_year_end" else None,
                    after_from=tuple(after_from) if any(f != "previous" for f in after_from) else (),
                )
            )
        return result


MAX_BACKUP_KEPT = Period(years=10)
"""Longest backup retention a pack may declare: beyond it a certificate's date says nothing useful."""


class Backups(_Strict):
    """How long this database's backups are kept: how long a purged record still exists in them."""

    kept_for: PeriodField = Field(description="Age at which the oldest backup is deleted or overwritten (P35D).")

    @field_validator("kept_for")
    @classmethod
    def _positive(cls, value: Period) -> Period:
        if value.max_days() == 0:
            raise ValueError("kept_for must be longer than P0D; leave 'backups' out when no backup is kept")
        if not value.within(MAX_BACKUP_KEPT):
            raise ValueError(f"kept_for {value} is longer than {MAX_BACKUP_KEPT}; backups are kept for weeks or months")
        return value


class Erasure(_Strict):
    """How fast erasure requests must be answered (GDPR art. 12(3))."""

    respond_within: PeriodField = Field(default_factory=lambda: Period(months=1))
    extension: PeriodField = Field(default_factory=lambda: Period(months=2))
    basis: str = "GDPR art. 12(3), 17"


def _supported_countries() -> dict[str, list[str]]:
    import holidays

    return dict(holidays.list_supported_countries())


class Pack(_Strict):
    """One version of a rule pack."""

    pack: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=100)
    title: str | None = None
    version: str = Field(min_length=1, max_length=100)
    effective_from: dt.date
    timezone: str = "UTC"
    _added_later = ("country", "subdivision", "notice", "engine_retention", "backups", "announced")
    country: str | None = Field(
        default=None,
        description="ISO 3166-1 alpha-2 code whose public holidays deadlines to act skip (with weekends).",
    )
    subdivision: str | None = Field(default=None, description="The country's subdivision, e.g. 57 (Moselle) in FR.")
    notice: PeriodField | None = Field(
        default=None,
        description="How long before taking effect a new version must have been seen (e.g. P8D).",
    )
    announced: dt.date | None = Field(
        default=None,
        description="When this version was announced: notice counts from it when the engine saw the version earlier.",
    )
    engine_retention: PeriodField | None = Field(
        default=None,
        description="How long settled erasure requests and released holds keep the subject id and notes (P3Y).",
    )
    backups: Backups | None = Field(
        default=None,
        description="How long backups of this database are kept (docs/backups.md): the backup horizon of a purge.",
    )
    financial_year_end: YearEndField = Field(default_factory=YearEnd)
    erasure: Erasure = Field(default_factory=Erasure)
    guard: Guard = Field(default_factory=Guard)
    batch_size: int = Field(default=5000, gt=0, le=MAX_BATCH_SIZE, strict=True)
    datasets: dict[Annotated[str, Field(min_length=1, max_length=100)], Dataset] = Field(min_length=1)

    _check_tz = field_validator("timezone")(_check_timezone)

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        countries = _supported_countries()
        if value.upper() not in countries:
            raise ValueError(
                f"unknown country {value!r}; use an ISO 3166-1 alpha-2 code with public holidays "
                "in the holidays package, such as FR, NL, BE, LU or DE"
            )
        return value.upper()

    @field_validator("subdivision", mode="before")
    @classmethod
    def _subdivision_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _announced_coherent(self) -> Pack:
        # Notice is counted from the announcement (docs/rules.md, 'Notice periods'):
        # without a notice the date changes nothing, and a version announced after
        # it takes effect gave no notice at all; both are refused, not ignored.
        if self.announced is None:
            return self
        if self.notice is None:
            raise ValueError(
                "@announced: 'announced' only moves the start of a notice period; add 'notice' (e.g. P8D) or remove it"
            )
        if self.announced > self.effective_from:
            raise ValueError(
                f"@announced: announced {self.announced} is after effective_from {self.effective_from}: "
                "a version cannot be announced after it takes effect"
            )
        return self

    @model_validator(mode="after")
    def _year_end_used(self) -> Pack:
        # The year end only moves the clocks of keep rules anchored to it; a year end
        # of its own without one reads as if invoices ran from the close of that year,
        # and they do not. The default written out (12-31, as the reference packs do)
        # states the calendar year every pack already has.
        anchored = any(rule.anchor == "financial_year_end" for ds in self.datasets.values() for rule in ds.keep)
        if self.financial_year_end != YearEnd() and not anchored:
            raise ValueError(
                "@financial_year_end: no keep rule has anchor: financial_year_end, so the year end moves no "
                "clock; add the anchor to the rules counted from the close of the year, or remove it"
            )
        return self

    @model_validator(mode="after")
    def _known_subdivision(self) -> Pack:
        if self.subdivision is None:
            return self
        if self.country is None:
            raise ValueError("@subdivision: a subdivision needs 'country' (e.g. country: FR, subdivision: '57')")
        valid = _supported_countries()[self.country]
        if self.subdivision not in valid:
            names = ", ".join(valid) if valid else "none"
            raise ValueError(
                f"@subdivision: unknown subdivision {self.subdivision!r} of {self.country}; valid: {names}"
            )
        return self

    def unused_erasure_settings(self) -> list[str]:
        """``erasure`` and ``country`` set in a version no erasure request can be filed under.

        Not refused: requests filed under an earlier version stay open, and the
        run, ``erasure list`` and ``erasure extend`` read the version in force
        today for their extension, holidays and basis. By value, not by
        presence: a dumped pack carries every key with its default.
        """
        if any(ds.on_erasure is not None for ds in self.datasets.values()):
            return []
        given = {"country": self.country is not None, "erasure": self.erasure != Erasure()}
        return [key for key, set_here in given.items() if set_here]

    @property
    def working_days(self) -> WorkingDays:
        """The calendar of deadlines to act: weekends and the country's public holidays."""
        return WorkingDays(self.country, self.subdivision)

    @field_validator("effective_from", "announced", mode="before")
    @classmethod
    def _date_only(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dt.datetime):
            raise ValueError(f"{info.field_name} is a date (YYYY-MM-DD), not a timestamp")
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None
        return value

    def guard_for(self, dataset: str) -> Guard:
        return self.datasets[dataset].guard or self.guard

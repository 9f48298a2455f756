"""Write and read model rows without Django's SQL compiler, in as few round trips as possible.

An upload and the superevent manager write a handful of rows each (the
event, its coinc.xml File row, logs, step runs, new superevents). Through
``Model.save`` or ``bulk_create`` every statement is compiled anew, which
costs this machine about 1 ms of CPU, several times what PostgreSQL spends
running it; with ~8 such statements per upload that is a third of the
upload's CPU beside the coinc.xml parse. ``insert`` writes the same rows:
values come from the fields themselves (``pre_save`` for defaults such as
``auto_now_add``, ``get_db_prep_save`` for each backend's adaptation, JSON
included), so what lands in the table is what the ORM would have written.

Each round trip to PostgreSQL costs about 0.2 ms of client CPU and as much
of the server's, whatever the statement does, so ``run`` sends statements
that do not depend on each other's results in one query string (psycopg's
client-side binding uses PostgreSQL's simple query protocol, which takes
several statements; each still sees the rows the ones before it wrote).
Other backends, and a PostgreSQL connection set up for server-side binding,
run them one by one: the same rows, more round trips.

``select_statement`` reads rows back as model instances, with the same
per-field conversions (JSON, SQLite's dates and booleans) as a queryset, so
reads can share a round trip too. ``Savepoint`` opens a savepoint with the
first statements run after it, instead of in a round trip of its own.

Only for plain models: no multi-table inheritance, no signals are sent
(``bulk_create`` sends none either), no ``save()`` overrides are run.
"""
import dataclasses
from typing import Callable

from django.db import connection


@dataclasses.dataclass
class Statement:
    """One SQL statement for ``run``. ``done`` is called once it ran: with
    its result rows if ``returns_rows``, else with None."""

    sql: str
    params: list
    returns_rows: bool = False
    done: Callable[[list | None], None] | None = None

    def finish(self, cursor):
        rows = cursor.fetchall() if self.returns_rows else None
        if self.done is not None:
            self.done(rows)


def run(statements):
    """Execute ``statements`` (None entries are skipped) in order, in one
    round trip where the connection allows it, handing each its rows."""
    statements = [statement for statement in statements if statement is not None]
    if not statements:
        return
    with connection.cursor() as cursor:
        if len(statements) > 1 and _takes_several_statements(cursor):
            cursor.execute("; ".join(s.sql for s in statements),
                           [value for s in statements for value in s.params])
            for index, statement in enumerate(statements):
                if index:
                    cursor.nextset()
                statement.finish(cursor)
            return
        for statement in statements:
            cursor.execute(statement.sql, statement.params)
            statement.finish(cursor)


def _takes_several_statements(cursor):
    """True for a psycopg 3 client-side-binding cursor (Django's default on PostgreSQL)."""
    if connection.vendor != "postgresql":
        return False
    try:
        from psycopg import ClientCursor
    except ImportError:  # psycopg2 also sends one query string, but is not what this project pins
        return False
    return isinstance(cursor.cursor, ClientCursor)


class Savepoint:
    """A savepoint that costs no round trip of its own.

    ``statement()`` is put first in the next ``run``; ``rollback()`` undoes
    what ran after it, if it was sent. Committing the transaction releases
    it, so a successful block needs no RELEASE either. For a block whose
    first database work is a ``run`` (``transaction.atomic`` sends its
    SAVEPOINT and RELEASE as two extra round trips).
    """

    def __init__(self, name):
        self.name = connection.ops.quote_name(name)
        self.sent = False

    def statement(self):
        self.sent = True
        return Statement(f"SAVEPOINT {self.name}", [])

    def rollback(self):
        """Back to the savepoint (nothing to do if it was never sent)."""
        if self.sent:
            with connection.cursor() as cursor:
                cursor.execute(f"ROLLBACK TO SAVEPOINT {self.name}")


def select_statement(model, condition, params, done, alias=None, order_by=None, lock=""):
    """A `Statement` selecting every concrete column of ``model`` from the rows
    that match ``condition`` (SQL, with ``alias`` for the table if given);
    ``done`` receives them as model instances, converted as a queryset would.
    """
    meta = model._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    prefix = quote(alias) if alias else table
    fields = meta.concrete_fields
    columns = ", ".join(f"{prefix}.{quote(field.column)}" for field in fields)
    sql = f"SELECT {columns} FROM {table}{' ' + quote(alias) if alias else ''} WHERE {condition}"
    if order_by:
        sql += f" ORDER BY {order_by}"
    sql += lock
    converters = _converters(model)
    names = [field.attname for field in fields]

    def finished(rows):
        instances = []
        for row in rows:
            values = list(row)
            for index, column, chain in converters:
                for convert in chain:
                    values[index] = convert(values[index], column, connection)
            instances.append(model.from_db(connection.alias, names, values))
        done(instances)

    return Statement(sql, list(params), returns_rows=True, done=finished)


def _converters(model):
    """(index, column, converters) of the fields of ``model`` whose database
    values need converting (as SQLCompiler.get_converters finds them)."""
    table = model._meta.db_table
    found = []
    for index, field in enumerate(model._meta.concrete_fields):
        column = field.get_col(table)
        chain = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if chain:
            found.append((index, column, chain))
    return found


def reserve_pks(*models):
    """One new primary key from each model's sequence, in one query
    (PostgreSQL), so that rows pointing at each other go in together."""
    quote = connection.ops.quote_name
    draws = ", ".join(f"nextval(pg_get_serial_sequence('{quote(model._meta.db_table)}', "
                      f"'{model._meta.pk.column}'))" for model in models)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {draws}", [])
        return list(cursor.fetchone())


def insert(objs):
    """INSERT ``objs`` (instances of one model) with one statement and set
    their primary keys. Instances whose pk is set are written with it.

    Related objects assigned before they were saved (``log.superevent =
    new_superevent``) are linked by their pk now, as ``bulk_create`` does.
    """
    objs = list(objs)
    if not objs:
        return objs
    statement = insert_statement(objs)
    if statement is None:  # a database that cannot say the new ids
        return type(objs[0]).objects.bulk_create(objs)
    run([statement])
    return objs


def insert_statement(objs):
    """The INSERT of ``insert(objs)`` as a `Statement` for `run`, which sets
    the primary keys and saved state of ``objs`` when it runs.

    None for no objects, or when the database cannot return the new primary
    keys of a multi-row INSERT (``insert`` then uses ``bulk_create``).
    """
    objs = list(objs)
    if not objs:
        return None
    model = type(objs[0])
    meta = model._meta
    if any(type(obj) is not model for obj in objs):
        raise TypeError(f"insert takes instances of one model, got {sorted({type(o).__name__ for o in objs})}")
    preset_pk = objs[0].pk is not None
    if any((obj.pk is not None) != preset_pk for obj in objs):
        raise ValueError("insert takes instances that all have a pk, or none")
    returning = not preset_pk and connection.features.can_return_rows_from_bulk_insert
    if not preset_pk and not returning:
        return None
    fields = [field for field in meta.concrete_fields if preset_pk or not field.primary_key]
    rows = []
    for obj in objs:
        _link_saved_relations(obj, fields)
        rows.append([field.get_db_prep_save(field.pre_save(obj, add=True), connection) for field in fields])
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    values = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * len(rows))
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {values}"

    def saved(new_pks=None):
        for index, obj in enumerate(objs):
            if new_pks is not None:
                obj.pk = new_pks[index][0]
            obj._state.adding = False
            obj._state.db = connection.alias

    if returning:
        sql += f" RETURNING {quote(meta.pk.column)}"
    return Statement(sql, [value for row in rows for value in row], returns_rows=returning, done=saved)


def _link_saved_relations(obj, fields):
    for field in fields:
        if field.is_relation and getattr(obj, field.attname) is None and field.is_cached(obj):
            related = field.get_cached_value(obj)
            if related is not None:
                if related.pk is None:
                    raise ValueError(f"{type(obj).__name__}.{field.name} points at an unsaved object")
                setattr(obj, field.attname, related.pk)

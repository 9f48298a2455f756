"""ORM statements compiled once per process and shape, then run with new values.

Building and compiling a statement costs the client far more CPU than
running it (a locked join of events and superevents: about 0.4 ms against
0.05 ms), and an upload runs the same few statements for every event. Here
the ORM stays the one definition of each statement: a queryset built with
`Param` placeholders (`PreparedSelect`, `PreparedUpdate`) or a
``bulk_create`` (`insert`) is compiled by Django once, and later runs bind
new values into its SQL.
"""
from django.db import connections, transaction
from django.db.models import Expression
from django.db.models.query import ModelIterable, get_related_populators
from django.db.models.sql import InsertQuery, UpdateQuery
from django.db.models.sql.compiler import SQLInsertCompiler


class Param(Expression):
    """A value of a prepared statement, bound by ``name`` when it runs."""

    def __init__(self, name, output_field):
        super().__init__(output_field=output_field)
        self.name = name

    def as_sql(self, compiler, connection):
        return "%s", [self]

    def __repr__(self):
        return f"Param({self.name!r})"


class _Compiled:
    """The SQL of a queryset, its parameters (Param where bound at run time)
    and how its rows become model instances."""

    def __init__(self, queryset):
        self.alias = queryset.db
        self.vendor = connections[self.alias].vendor
        compiler = queryset.query.get_compiler(using=self.alias)
        self.sql, self.params = compiler.as_sql()
        select, klass_info = compiler.select, compiler.klass_info
        self.converters = list(compiler.get_converters([column[0] for column in select]).items())
        # None: a values_list, whose rows stay tuples.
        self.model = klass_info["model"] if queryset._iterable_class is ModelIterable else None
        if self.model is None:
            return
        fields = klass_info["select_fields"]
        self.start, self.end = fields[0], fields[-1] + 1
        self.init_list = [column[0].target.attname for column in select[self.start:self.end]]
        self.populators = get_related_populators(klass_info, select, self.alias)
        self.annotations = list(compiler.annotation_col_map.items())


class PreparedSelect:
    """A queryset made by ``build(key)`` with `Param` placeholders; ``key``
    names its shape (e.g. how many conditions it ORs), one compilation per
    key. Runs give model instances, or tuples for a ``values_list``."""

    def __init__(self, build, server_prepared=False):
        """``server_prepared``: on PostgreSQL, also a server-side prepared
        statement (`execute_prepared`)."""
        self.build = build
        self.server_prepared = server_prepared
        self._compiled = {}  # shared by threads: it names no connection object

    def __call__(self, key, **values):
        """The rows of the statement of shape ``key`` with ``values`` bound."""
        compiled = self._compiled.get(key)
        if compiled is None or connections[compiled.alias].vendor != compiled.vendor:
            compiled = self._compiled[key] = _Compiled(self.build(key))
        connection = connections[compiled.alias]
        params = [values[param.name] if isinstance(param, Param) else param for param in compiled.params]
        if self.server_prepared and compiled.vendor == "postgresql":
            rows = execute_prepared(compiled.alias, compiled.sql, params, rows=True)
        else:
            with connection.cursor() as cursor:
                cursor.execute(compiled.sql, params)
                rows = cursor.fetchall()
        objects = []
        for row in rows:
            if compiled.converters:
                row = list(row)
                for position, (functions, expression) in compiled.converters:
                    value = row[position]
                    for function in functions:
                        value = function(value, expression, connection)
                    row[position] = value
            if compiled.model is None:
                objects.append(tuple(row))
                continue
            obj = compiled.model.from_db(compiled.alias, compiled.init_list, row[compiled.start:compiled.end])
            for populator in compiled.populators:
                populator.populate(row, obj)
            for name, position in compiled.annotations:
                setattr(obj, name, row[position])
            objects.append(obj)
        return objects


class PreparedUpdate:
    """``queryset.update(**values)`` for the queryset and values made by
    ``build(key)`` (`Param` placeholders where they vary), compiled once per
    ``key``; returns the number of rows changed."""

    def __init__(self, build):
        self.build = build
        self._compiled = {}

    def __call__(self, key, **values):
        compiled = self._compiled.get(key)
        if compiled is None or connections[compiled[0]].vendor != compiled[1]:
            queryset, updates = self.build(key)
            query = queryset.query.chain(UpdateQuery)
            query.add_update_values(updates)
            compiler = query.get_compiler(using=queryset.db)
            sql, params = compiler.as_sql()
            if query.related_updates or not sql:
                raise ValueError("a prepared update changes one table's columns")
            compiled = self._compiled[key] = (queryset.db, compiler.connection.vendor, sql, params)
        alias, _, sql, params = compiled
        with transaction.mark_for_rollback_on_error(using=alias), connections[alias].cursor() as cursor:
            cursor.execute(sql, [values[p.name] if isinstance(p, Param) else p for p in params])
            return cursor.rowcount


# psycopg prepares a statement that asks for it (``prepare=True``) only on
# a connection with a threshold; Django leaves it unset (None) for
# transaction-mode connection poolers, which cannot keep prepared statements.
PREPARE_THRESHOLD = 5


def execute_prepared(using, sql, params, rows=False):
    """Run a PostgreSQL statement (``%s`` placeholders) as a server-side
    prepared statement, parsed and planned once per connection; returns
    the row count (or the rows). Django binds values on the client (its
    cursors send the statement text whole each time, with the values
    quoted into it); measured on `listen`'s statements per message, this
    took a message from 3.6-4.2 ms to 2.7-3.2 ms (4-5 ms before binding on
    the server)."""
    import psycopg

    connection = connections[using]
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns psycopg's preparing off; Django's own (client-side
        # binding) cursors never prepare, so only these statements are.
        raw.prepare_threshold = PREPARE_THRESHOLD
    with transaction.mark_for_rollback_on_error(using=using), psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchall() if rows else cursor.rowcount


# Most rows `insert` compiles a statement for; larger batches use bulk_create.
MAX_PREPARED_ROWS = 16
_inserts = {}


def insert(objs, using="default"):
    """``bulk_create(objs)`` for a few new rows of one plain model (all with
    their pk, or all without), its statement compiled once per model, row
    count and pk presence. The values come from the fields as bulk_create's
    do (``pre_save``, ``get_db_prep_save``); the rows go in as VALUES, not
    PostgreSQL's UNNEST of arrays, which psycopg's client-side binding dumps
    in Python (UNNEST pays for large batches, bulk_create's). Returns ``objs``.
    """
    objs = list(objs)
    if not objs:
        return objs
    model = type(objs[0])
    with_pk = objs[0].pk is not None
    if len(objs) > MAX_PREPARED_ROWS or any(type(obj) is not model or (obj.pk is not None) != with_pk
                                            for obj in objs):
        return model._base_manager.using(using).bulk_create(objs)
    key = (model, len(objs), with_pk, using)
    connection = connections[using]
    if key not in _inserts or (_inserts[key] and _inserts[key][0] != connection.vendor):
        _inserts[key] = _compile_insert(model, objs, with_pk, using)
    compiled = _inserts[key]
    if compiled is None:
        return model._base_manager.using(using).bulk_create(objs)
    _, fields, sql, returning = compiled
    params = []
    for obj in objs:
        obj._prepare_related_fields_for_save(operation_name="bulk_create")
        for field in fields:
            value = field.pre_save(obj, add=True)
            if hasattr(value, "resolve_expression"):  # an expression: bulk_create knows how
                return model._base_manager.using(using).bulk_create(objs)
            params.append(field.get_db_prep_save(value, connection=connection))
    with transaction.mark_for_rollback_on_error(using=using), connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall() if returning else [()] * len(objs)
    for obj, row in zip(objs, rows):
        for field, value in zip(returning, row):
            setattr(obj, field.attname, value)
        obj._state.adding = False
        obj._state.db = using
    return objs


def _compile_insert(model, objs, with_pk, using):
    """(vendor, fields, SQL, returning fields) of `insert`, or None where
    bulk_create does more than one plain INSERT (inheritance, database
    defaults, generated columns, placeholders other than %s)."""
    connection = connections[using]
    meta = model._meta
    if (meta.parents or meta.db_returning_fields != [meta.pk]
            or any(field.generated for field in meta.concrete_fields)
            or not connection.features.can_return_rows_from_bulk_insert):
        return None
    fields = [field for field in meta.concrete_fields if with_pk or field is not meta.pk]
    query = InsertQuery(model)
    query.insert_values(fields, objs)
    compiler = query.get_compiler(using=using)
    # Django's generic VALUES rows rather than the backend's UNNEST (see insert).
    compiler.assemble_as_sql = SQLInsertCompiler.assemble_as_sql.__get__(compiler)
    compiler.returning_fields = [] if with_pk else [meta.pk]
    statements = compiler.as_sql()
    if len(statements) != 1 or statements[0][0].count("%s") != len(fields) * len(objs):
        return None
    return connection.vendor, fields, statements[0][0], compiler.returning_fields

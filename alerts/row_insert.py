"""INSERT model instances without Django's SQL compiler.

An upload and the superevent manager write a handful of rows each (the
event, its coinc.xml File row, logs, step runs, new superevents). Through
``Model.save`` or ``bulk_create`` every statement is compiled anew, which
costs this machine about 1 ms of CPU, several times what PostgreSQL spends
running it; with ~8 such statements per upload that is a third of the
upload's CPU beside the coinc.xml parse. ``insert`` writes the same rows:
values come from the fields themselves (``pre_save`` for defaults such as
``auto_now_add``, ``get_db_prep_save`` for each backend's adaptation, JSON
included), so what lands in the table is what the ORM would have written.

Only for plain models: no multi-table inheritance, no signals are sent
(``bulk_create`` sends none either), no ``save()`` overrides are run.
"""
from django.db import connection


def insert(objs):
    """INSERT ``objs`` (instances of one model) with one statement and set
    their primary keys. Instances whose pk is set are written with it.

    Related objects assigned before they were saved (``log.superevent =
    new_superevent``) are linked by their pk now, as ``bulk_create`` does.
    """
    objs = list(objs)
    if not objs:
        return objs
    model = type(objs[0])
    meta = model._meta
    if any(type(obj) is not model for obj in objs):
        raise TypeError(f"insert takes instances of one model, got {sorted({type(o).__name__ for o in objs})}")
    preset_pk = objs[0].pk is not None
    if any((obj.pk is not None) != preset_pk for obj in objs):
        raise ValueError("insert takes instances that all have a pk, or none")
    fields = [field for field in meta.concrete_fields if preset_pk or not field.primary_key]
    rows = []
    for obj in objs:
        _link_saved_relations(obj, fields)
        rows.append([field.get_db_prep_save(field.pre_save(obj, add=True), connection) for field in fields])
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    values = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * len(rows))
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {values}"
    returning = not preset_pk and connection.features.can_return_rows_from_bulk_insert
    if not preset_pk and not returning:
        return model.objects.bulk_create(objs)  # a database that cannot say the new ids
    if returning:
        sql += f" RETURNING {quote(meta.pk.column)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])
        new_pks = cursor.fetchall() if returning else None
    for index, obj in enumerate(objs):
        if returning:
            obj.pk = new_pks[index][0]
        obj._state.adding = False
        obj._state.db = connection.alias
    return objs


def _link_saved_relations(obj, fields):
    for field in fields:
        if field.is_relation and getattr(obj, field.attname) is None and field.is_cached(obj):
            related = field.get_cached_value(obj)
            if related is not None:
                if related.pk is None:
                    raise ValueError(f"{type(obj).__name__}.{field.name} points at an unsaved object")
                setattr(obj, field.attname, related.pk)

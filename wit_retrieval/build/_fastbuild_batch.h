/*
 * The batch half of _fastbuild.c (included there, after _fastbuild_rows.h): the buffers kept
 * from call to call, the two passes over an Arrow batch (link by language, then filter and
 * write in row order) and process(), the entry point fastpath.py calls.
 */

/* The scratch and output buffers outlive a call: the next batch reuses their memory, instead of
 * growing fresh buffers (copies on each doubling, and the kernel zeroing new pages: a fifth of
 * the C time when every batch started from nothing). Calls hold the GIL, so one set serves. */
static Ctx g_kept;

static void ctx_take_buffers(Ctx *c) {
    c->cps = g_kept.cps; c->boff = g_kept.boff; c->w = g_kept.w; c->fmapbuf = g_kept.fmapbuf; c->cap = g_kept.cap;
    c->spans = g_kept.spans; c->spans_cap = g_kept.spans_cap;
    c->visit = g_kept.visit; c->span_at = g_kept.span_at; c->span_n = g_kept.span_n; c->rows_cap = g_kept.rows_cap;
    c->order = g_kept.order; c->mask_of = g_kept.mask_of; c->order_cap = g_kept.order_cap;
    c->normal = g_kept.normal;
    Buf *mine[] = {&c->rows, &c->num_entities, &c->list_off, &c->ment_off, &c->m_mask, &c->m_start, &c->m_end};
    Buf *kept[] = {&g_kept.rows, &g_kept.num_entities, &g_kept.list_off, &g_kept.ment_off, &g_kept.m_mask,
                   &g_kept.m_start, &g_kept.m_end};
    for (size_t i = 0; i < sizeof mine / sizeof *mine; i++) { *mine[i] = *kept[i]; mine[i]->len = 0; }
    StrCol *cols[] = {&c->qid, &c->target, &c->masked, &c->ent_ids, &c->ent_urls, &c->m_eid, &c->m_surface};
    StrCol *kept_cols[] = {&g_kept.qid, &g_kept.target, &g_kept.masked, &g_kept.ent_ids, &g_kept.ent_urls,
                           &g_kept.m_eid, &g_kept.m_surface};
    for (size_t i = 0; i < sizeof cols / sizeof *cols; i++) *cols[i] = *kept_cols[i];
    memset(&g_kept, 0, sizeof g_kept);  /* c owns them until ctx_free hands them back */
}

static void ctx_free(Ctx *c) {
    g_kept = *c;  /* the buffers only: every pointer into the call's inputs is left behind, unused */
}

static PyObject *ctx_result(Ctx *c) {
    PyObject *dropped = PyDict_New();
    if (!dropped) return NULL;
    for (int i = 0; i < 6; i++) {
        PyObject *v = PyLong_FromLong(c->dropped[i]);
        if (!v || PyDict_SetItemString(dropped, DROP_NAMES[i], v) < 0) { Py_XDECREF(v); Py_DECREF(dropped); return NULL; }
        Py_DECREF(v);
    }
#define B(b) buf_bytes(&(b))
#define S(col) B((col).offsets), B((col).data)
    return Py_BuildValue("{s:N,s:(NN),s:(NN),s:(NN),s:N,s:N,s:(NN),s:(NN),s:N,s:N,s:(NN),s:(NN),s:N,s:N,s:N}",
                         "rows", B(c->rows), "query_id", S(c->qid), "target_image_id", S(c->target),
                         "masked_text", S(c->masked), "num_entities", B(c->num_entities), "list_offsets", B(c->list_off),
                         "entity_ids", S(c->ent_ids), "entity_image_urls", S(c->ent_urls),
                         "mention_offsets", B(c->ment_off), "mask", B(c->m_mask), "entity_id", S(c->m_eid),
                         "surface", S(c->m_surface), "start", B(c->m_start), "end", B(c->m_end), "dropped", dropped);
#undef S
#undef B
}

#define PROCESS_DOC \
    "process(texts, urls, pages, langs, automata, entity_ids, entity_urls, entity_images, entity_has_image,\n" \
    "        split, min_entities, max_entities, min_words, drop_entity_image, fallback, choose, normalize, is_nfc,\n" \
    "        keep=None)\n" \
    "texts/urls/pages/entity_ids/entity_urls: (int32 offsets, UTF-8 data) buffers; langs: int32 per row\n" \
    "(index into the automata tuple, -1: none); entity_images: 16 hex bytes per entity; entity_has_image:\n" \
    "one byte per entity; keep: one byte per row, 0 = skip the row (no text). Returns the kept rows'\n" \
    "column buffers and the drop counts."

/* c->visit: the candidate rows, grouped by language (a counting sort; rows of no language last) */
static int visit_by_language(Ctx *c, Py_ssize_t rows, const uint8_t *keep_rows) {
    if ((size_t)rows + 1 > c->rows_cap) {
        size_t cap = (size_t)rows + 1;
        int32_t *v = realloc(c->visit, cap * sizeof *v), *a = realloc(c->span_at, cap * sizeof *a),
                *n = realloc(c->span_n, cap * sizeof *n);
        if (v) c->visit = v;
        if (a) c->span_at = a;
        if (n) c->span_n = n;
        if (!v || !a || !n) { PyErr_NoMemory(); return -1; }
        c->rows_cap = cap;
    }
    Py_ssize_t languages = PyTuple_GET_SIZE(c->automata);
    Py_ssize_t *start = calloc((size_t)languages + 2, sizeof *start);
    if (!start) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t row = 0; row < rows; row++) {
        if (keep_rows && !keep_rows[row]) continue;
        int32_t lang = c->langs[row];
        start[(lang >= 0 && lang < languages ? lang : languages) + 1]++;
    }
    for (Py_ssize_t k = 0; k <= languages; k++) start[k + 1] += start[k];
    c->nvisit = start[languages + 1];
    for (Py_ssize_t row = 0; row < rows; row++) {
        if (keep_rows && !keep_rows[row]) continue;
        int32_t lang = c->langs[row];
        c->visit[start[lang >= 0 && lang < languages ? lang : languages]++] = (int32_t)row;
    }
    free(start);
    return 0;
}

/* a row's text into c->cps (code points) and c->boff (their byte offsets); c->n its length */
static int decode_row(Ctx *c, Py_ssize_t row) {
    size_t len = (size_t)(c->t_off[row + 1] - c->t_off[row]);
    if (grow_scratch(c, len + 1) < 0) return -1;
    c->n = utf8_decode(c->t_data + c->t_off[row], len, c->cps, c->boff);
    if (c->n < 0) {
        PyErr_Format(PyExc_ValueError, "row %zd of the batch is not valid UTF-8", row);
        return -1;
    }
    return 0;
}

/* The keep pass reads, for each span, its entity's id, image URL, image id and flag: random
 * places in tables of ~100k entities, which the scan of the whole batch has pushed out of the
 * cache. Rows ahead are asked for early, in two steps (the offsets, then the strings they
 * point to, once those offsets have arrived), so that the misses overlap instead of stalling
 * one after another. Hints only: nothing here changes a result. */
#define PREFETCH_OFFSETS 8  /* rows ahead */
#define PREFETCH_STRINGS 4

static void prefetch_row(const Ctx *c, const Span *spans, Py_ssize_t row, int strings) {
    const Span *s = spans + c->span_at[row];
    for (int32_t k = 0; k < c->span_n[row]; k++) {
        int32_t e = s[k].entity;
        if (e < 0 || e >= c->entities) continue;
        if (strings) {
            __builtin_prefetch(c->e_data + c->e_off[e]);
            __builtin_prefetch(c->eu_data + c->eu_off[e]);
        } else {
            __builtin_prefetch(c->e_off + e);
            __builtin_prefetch(c->eu_off + e);
            __builtin_prefetch(c->e_has + e);
            __builtin_prefetch(c->e_img + 16 * (size_t)e);
        }
    }
}

static void prefetch_entities(const Ctx *c, const Span *spans, const uint8_t *keep_rows, Py_ssize_t rows,
                              Py_ssize_t row) {
    Py_ssize_t ahead = row + PREFETCH_OFFSETS, near = row + PREFETCH_STRINGS;
    if (ahead < rows && (!keep_rows || keep_rows[ahead])) prefetch_row(c, spans, ahead, 0);
    if (near < rows && (!keep_rows || keep_rows[near])) prefetch_row(c, spans, near, 1);
}

static int get_strbuf(PyObject *pair, Py_buffer *off, Py_buffer *data, const char *name) {
    if (!PyArg_ParseTuple(pair, "y*y*", off, data)) {
        PyErr_Format(PyExc_TypeError, "%s must be (offsets, data) buffers", name);
        return -1;
    }
    return 0;
}

static PyObject *process_batch(PyObject *self, PyObject *args, PyObject *kw) {
    PyObject *texts, *urls, *pages, *ents, *eurls, *result = NULL;
    Py_buffer b[12];
    memset(b, 0, sizeof b);
    Py_buffer *langs = &b[6], *eimg = &b[10], *ehas = &b[11];
    Py_buffer eu_off, eu_data;
    memset(&eu_off, 0, sizeof eu_off);
    memset(&eu_data, 0, sizeof eu_data);
    Ctx c;
    memset(&c, 0, sizeof c);
    ctx_take_buffers(&c);
    Span *span_base = NULL;
    size_t span_total = 0;
    PyObject *keep = Py_None;
    Py_buffer keep_buf;
    memset(&keep_buf, 0, sizeof keep_buf);
    if (!PyArg_ParseTuple(args, "OOOy*O!OOy*y*y#iiipOOOO|O", &texts, &urls, &pages, langs, &PyTuple_Type, &c.automata,
                          &ents, &eurls, eimg, ehas, &c.split, &c.split_len, &c.min_entities, &c.max_entities,
                          &c.min_words, &c.drop_entity_image, &c.fallback, &c.choose, &c.normalize, &c.is_nfc, &keep))
        return NULL;
    if (keep != Py_None && PyObject_GetBuffer(keep, &keep_buf, PyBUF_SIMPLE) < 0) goto release;
    if (get_strbuf(texts, &b[0], &b[1], "texts") < 0 || get_strbuf(urls, &b[2], &b[3], "urls") < 0 ||
        get_strbuf(pages, &b[4], &b[5], "pages") < 0 || get_strbuf(ents, &b[7], &b[8], "entity_ids") < 0)
        goto release;
    if (get_strbuf(eurls, &eu_off, &eu_data, "entity_urls") < 0) goto release;
    Py_ssize_t rows = b[0].len / 4 - 1;
    c.t_off = b[0].buf; c.t_data = b[1].buf; c.u_off = b[2].buf; c.u_data = b[3].buf;
    c.p_off = b[4].buf; c.p_data = b[5].buf; c.langs = langs->buf;
    c.e_off = b[7].buf; c.e_data = b[8].buf; c.eu_off = eu_off.buf; c.eu_data = eu_data.buf;
    c.e_img = eimg->buf; c.e_has = ehas->buf; c.entities = ehas->len;
    if (rows < 0 || b[2].len != b[0].len || b[4].len != b[0].len || langs->len != rows * 4 || eimg->len != 16 * ehas->len ||
        b[7].len != 4 * (ehas->len + 1) || eu_off.len != b[7].len || (keep_buf.obj && keep_buf.len != rows)) {
        PyErr_SetString(PyExc_ValueError, "process(): column lengths disagree");
        goto release;
    }
    if (buf_reserve(&c.rows, 8) < 0 || strcol_init(&c.qid) < 0 || strcol_init(&c.target) < 0 || strcol_init(&c.masked) < 0 ||
        strcol_init(&c.ent_ids) < 0 || strcol_init(&c.ent_urls) < 0 || strcol_init(&c.m_eid) < 0 ||
        strcol_init(&c.m_surface) < 0 || buf_i32(&c.list_off, 0) < 0 || buf_i32(&c.ment_off, 0) < 0)
        goto release;
    const uint8_t *keep_rows = keep_buf.obj ? keep_buf.buf : NULL;
    if (visit_by_language(&c, rows, keep_rows) < 0) goto release;
    c.nspans = 0;
    for (Py_ssize_t k = 0; k < c.nvisit; k++) {  /* link, a language at a time: its trie stays in cache */
        Py_ssize_t row = c.visit[k];
        if (decode_row(&c, row) < 0) goto release;
        c.span_at[row] = (int32_t)c.nspans;
        if (link_row(&c, row, c.n) < 0) goto release;
        c.span_n[row] = (int32_t)(c.nspans - (size_t)c.span_at[row]);
    }
    span_base = c.spans;
    span_total = c.nspans;
    for (Py_ssize_t row = 0; row < rows; row++) {  /* then filter and write, in row order */
        prefetch_entities(&c, span_base, keep_rows, rows, row);
        if (keep_rows && !keep_rows[row]) continue;
        if (decode_row(&c, row) < 0) goto release;
        c.spans = span_base + c.span_at[row];
        c.nspans = (size_t)c.span_n[row];
        if (keep_row(&c, row, c.n) < 0) goto release;
    }
    c.spans = span_base;
    c.nspans = span_total;
    result = ctx_result(&c);
release:
    if (span_base) c.spans = span_base;  /* the allocation itself, kept for the next batch */
    PyBuffer_Release(&keep_buf);
    PyBuffer_Release(&eu_off);
    PyBuffer_Release(&eu_data);
    for (int i = 0; i < 12; i++) PyBuffer_Release(&b[i]);
    ctx_free(&c);
    return result;
}

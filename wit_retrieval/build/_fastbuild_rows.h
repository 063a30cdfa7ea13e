/*
 * The rows half of _fastbuild.c (included there): one Arrow batch of WIT rows of one shard
 * -> the kept queries' columns and the drop counts, as shard._queries_python computes them.
 */

#include "_fastbuild_text.h"

typedef struct { int32_t start, end, entity; } Span;

typedef struct {
    /* inputs */
    const int32_t *t_off, *u_off, *p_off, *langs, *e_off, *eu_off;
    const uint8_t *t_data, *u_data, *p_data, *e_data, *eu_data, *e_img, *e_has;
    Py_ssize_t entities;
    PyObject *automata, *fallback, *choose, *normalize, *is_nfc;
    const char *split;
    Py_ssize_t split_len;
    int min_entities, max_entities, min_words, drop_entity_image;
    /* scratch */
    uint32_t *cps, *boff, *w;
    int32_t *fmap, *fmapbuf;  /* folded index -> original index (-1 inside an expansion); NULL: identity */
    size_t cap;
    Span *spans;  /* the batch's spans, row after row (span_at, span_n: each row's) */
    size_t nspans, spans_cap;
    int32_t *visit, *span_at, *span_n;  /* rows in scan order (by language); each row's spans */
    size_t rows_cap;
    Py_ssize_t nvisit, n;  /* candidate rows; the decoded row's length in code points */
    int32_t *order, *mask_of;
    size_t order_cap;
    int32_t lang;
    Buf normal;
    /* outputs */
    Buf rows, num_entities, list_off, ment_off, m_mask, m_start, m_end;
    StrCol qid, target, masked, ent_ids, ent_urls, m_eid, m_surface;
    long dropped[6];
} Ctx;

enum { NO_ENTITY, TOO_MANY, NO_TARGET, UNKNOWN_ENTITY, TARGET_IS_ENTITY_IMAGE, TOO_FEW_WORDS };
static const char *DROP_NAMES[6] = {"no_entity", "too_many_entities", "no_target_image", "unknown_entity",
                                    "target_is_entity_image", "too_few_words"};

static int grow_scratch(Ctx *c, size_t n) {
    if (n <= c->cap) return 0;
    size_t cap = c->cap ? c->cap : 1024;
    while (cap < n) cap *= 2;
    uint32_t *cps = realloc(c->cps, cap * sizeof *cps);
    if (cps) c->cps = cps;
    uint32_t *boff = realloc(c->boff, (cap + 1) * sizeof *boff);
    if (boff) c->boff = boff;
    uint32_t *w = realloc(c->w, (cap + 3) * sizeof *w);
    if (w) c->w = w;
    int32_t *fmap = realloc(c->fmapbuf, (cap + 1) * sizeof *fmap);
    if (fmap) c->fmapbuf = fmap;
    if (!cps || !boff || !w || !fmap) { PyErr_NoMemory(); return -1; }
    c->cap = cap;
    return 0;
}

static int add_span(Ctx *c, int32_t start, int32_t end, int32_t entity) {
    if (c->nspans == c->spans_cap) {
        size_t cap = c->spans_cap ? c->spans_cap * 2 : 64;
        Span *s = realloc(c->spans, cap * sizeof *s);
        if (!s) { PyErr_NoMemory(); return -1; }
        c->spans = s;
        c->spans_cap = cap;
    }
    c->spans[c->nspans++] = (Span){start, end, entity};
    return 0;
}

typedef struct { Ctx *c; const Automaton *a; int32_t row_start; int32_t n; } ScanCtx;

/* one automaton hit -> a span in the original text (linker._scan's checks, in the same order) */
static int scan_emit(void *p, int32_t last, int32_t v) {
    ScanCtx *s = p;
    Ctx *c = s->c;
    const Automaton *a = s->a;
    int32_t first = last - a->vlen[v] + 1;
    if (a->vleft[v] && c->w[first - 1] != ' ' && c->w[first - 1] != 0) return 0;  /* starts inside a word */
    int32_t start = first - 1, end = last - a->vright[v];
    if (c->fmap) {
        start = c->fmap[start];
        end = c->fmap[end];
        if (start < 0 || end < 0) return 0;  /* inside one character's expansion */
    }
    int32_t target = a->vtarget[v];
    if (target == -1) return 0;  /* a blocker */
    if (target <= -2) {  /* several exact titles fold alike: the one spelled as the surface */
        const uint8_t *t = c->t_data + s->row_start;
        PyObject *surface = PyUnicode_DecodeUTF8((const char *)t + c->boff[start], c->boff[end] - c->boff[start], "strict");
        if (!surface) return -1;
        PyObject *res = PyObject_CallFunction(c->choose, "iiO", c->lang, -2 - target, surface);
        Py_DECREF(surface);
        if (!res) return -1;
        target = (int32_t)PyLong_AsLong(res);
        Py_DECREF(res);
        if (target == -1 && PyErr_Occurred()) return -1;
        if (target < 0) return 0;
    }
    return add_span(c, start, end, target);
}

/* spans of a row the C path cannot fold (not NFC, or not valid UTF-8): linker.link in Python */
static int fallback_spans(Ctx *c, Py_ssize_t row) {
    PyObject *res = PyObject_CallFunction(c->fallback, "n", row);
    if (!res) return -1;
    PyObject *seq = PySequence_Fast(res, "fallback must return a list");
    Py_DECREF(res);
    if (!seq) return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        int start, end, entity;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "iii", &start, &end, &entity) ||
            add_span(c, start, end, entity) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 1;
}

/* link one row: appends its spans to c->spans (Python links the rows C cannot fold) */
static int link_row(Ctx *c, Py_ssize_t row, Py_ssize_t n) {
    int32_t lang = c->langs[row];
    c->lang = lang;
    if (lang < 0 || lang >= PyTuple_GET_SIZE(c->automata)) return 0;
    PyObject *obj = PyTuple_GET_ITEM(c->automata, lang);
    if (obj == Py_None) return 0;
    const Automaton *a = (const Automaton *)obj;
    int ascii = 1;
    for (Py_ssize_t i = 0; i < n; i++) if (c->cps[i] >= 128) { ascii = 0; break; }
    size_t flen = 0;
    c->w[0] = ' ';
    if (ascii) {
        for (Py_ssize_t i = 0; i < n; i++) c->w[1 + i] = ascii_form(c->cps[i]);
        flen = (size_t)n;
        c->fmap = NULL;
    } else {
        int check = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t cp = c->cps[i];
            if (cp < 128) {
                if (grow_scratch(c, flen + 1) < 0) return -1;
                c->fmapbuf[flen] = (int32_t)i;
                c->w[1 + flen++] = ascii_form(cp);
                continue;
            }
            const uint32_t *info = char_info(cp);
            if (!info) return -1;
            uint32_t len = info[0] >> 8;
            check |= !(info[0] & INFO_NFC_SAFE);
            if (grow_scratch(c, flen + len) < 0) return -1;
            info = char_info(cp);  /* the pool may have moved */
            for (uint32_t j = 0; j < len; j++) {
                c->fmapbuf[flen] = j ? -1 : (int32_t)i;
                c->w[1 + flen++] = info[1 + j];
            }
        }
        c->fmapbuf[flen] = (int32_t)n;
        c->fmap = c->fmapbuf;
        if (check) {  /* a mark or the like: only NFC text folds per character */
            int32_t s = c->t_off[row];
            PyObject *text = PyUnicode_DecodeUTF8((const char *)c->t_data + s, c->t_off[row + 1] - s, "strict");
            if (!text) return -1;
            PyObject *res = PyObject_CallOneArg(c->is_nfc, text);
            Py_DECREF(text);
            if (!res) return -1;
            int nfc = PyObject_IsTrue(res);
            Py_DECREF(res);
            if (nfc < 0) return -1;
            if (!nfc) return fallback_spans(c, row);
        }
    }
    c->w[1 + flen] = ' ';
    c->w[2 + flen] = 0;  /* linker._ROW_END: the row ends as every row of a batch scan does */
    ScanCtx s = {c, a, c->t_off[row], (int32_t)n};
    return iter_long(a, c->w, (int32_t)flen + 3, scan_emit, &s) < 0 ? -1 : 0;
}

static int emit_row(Ctx *c, Py_ssize_t row, size_t count, const char *target);

/* words outside the masks (mask.context_words): runs of \w in the text between the spans */
static long context_words(const Ctx *c, Py_ssize_t n) {
    long words = 0;
    size_t k = 0;
    Py_ssize_t i = 0;
    while (i < n) {
        if (k < c->nspans && i == c->spans[k].start) { i = c->spans[k++].end; continue; }
        Py_ssize_t stop = k < c->nspans ? c->spans[k].start : n;
        while (i < stop) {
            if (!is_word(c->cps[i])) { i++; continue; }
            long run = 0, spaceless_chars = 0;
            for (; i < stop && is_word(c->cps[i]); i++, run++) spaceless_chars += spaceless(c->cps[i]);
            words += spaceless_chars + (spaceless_chars < run);
        }
    }
    return words;
}

/* the normal form of row's image URL into c->normal (fast_ids.normal_url) */
static int normal_url(Ctx *c, const uint8_t *u, size_t n) {
    c->normal.len = 0;
    if (url_is_normal(u, n)) return buf_put(&c->normal, u, n);
    PyObject *url = PyUnicode_DecodeUTF8((const char *)u, (Py_ssize_t)n, "strict");
    if (!url) return -1;
    PyObject *res = PyObject_CallOneArg(c->normalize, url);
    Py_DECREF(url);
    if (!res) return -1;
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(res, &len);
    int rc = s ? buf_put(&c->normal, s, (size_t)len) : -1;
    Py_DECREF(res);
    return rc;
}

/* the filters of shard._queries_python, in its order; appends a kept row to the outputs */
static int keep_row(Ctx *c, Py_ssize_t row, Py_ssize_t n) {
    if (!c->nspans) { c->dropped[NO_ENTITY]++; return 0; }
    if (c->order_cap < c->nspans) {
        size_t cap = c->nspans * 2;
        int32_t *o = realloc(c->order, cap * sizeof *o), *m = realloc(c->mask_of, cap * sizeof *m);
        if (o) c->order = o;
        if (m) c->mask_of = m;
        if (!o || !m) { PyErr_NoMemory(); return -1; }
        c->order_cap = cap;
    }
    size_t count = 0;
    for (size_t k = 0; k < c->nspans; k++) {  /* masks numbered by first occurrence */
        size_t j = 0;
        while (j < count && c->order[j] != c->spans[k].entity) j++;
        if (j == count) c->order[count++] = c->spans[k].entity;
        c->mask_of[k] = (int32_t)j;
    }
    if ((long)count < c->min_entities) { c->dropped[NO_ENTITY]++; return 0; }
    if ((long)count > c->max_entities) { c->dropped[TOO_MANY]++; return 0; }
    const uint8_t *url = c->u_data + c->u_off[row];
    size_t url_len = (size_t)(c->u_off[row + 1] - c->u_off[row]);
    if (!url_len) { c->dropped[NO_TARGET]++; return 0; }
    for (size_t j = 0; j < count; j++) {
        int32_t e = c->order[j];
        if (e < 0 || e >= c->entities || !c->e_has[e]) { c->dropped[UNKNOWN_ENTITY]++; return 0; }
    }
    if (normal_url(c, url, url_len) < 0) return -1;
    Sha sha;
    char target[16];
    sha_init(&sha);
    sha_update(&sha, (const uint8_t *)c->normal.data, c->normal.len);
    sha_hex16(&sha, target);
    if (c->drop_entity_image)
        for (size_t j = 0; j < count; j++)
            if (!memcmp(c->e_img + 16 * (size_t)c->order[j], target, 16)) {
                c->dropped[TARGET_IS_ENTITY_IMAGE]++;
                return 0;
            }
    if (context_words(c, n) < c->min_words) { c->dropped[TOO_FEW_WORDS]++; return 0; }
    return emit_row(c, row, count, target);
}

/* "[MASK_i]" into out (no printf: this runs for every mention) */
static int format_mask(char *out, int32_t i) {
    char digits[12];
    int n = 0, len = 0;
    do { digits[n++] = (char)('0' + i % 10); i /= 10; } while (i);
    memcpy(out, "[MASK_", 6);
    len = 6;
    while (n) out[len++] = digits[--n];
    out[len++] = ']';
    return len;
}

static int emit_row(Ctx *c, Py_ssize_t row, size_t count, const char *target) {
    const uint8_t *text = c->t_data + c->t_off[row];
    const uint8_t *page = c->p_data + c->p_off[row];
    size_t page_len = (size_t)(c->p_off[row + 1] - c->p_off[row]);
    size_t text_len = (size_t)(c->t_off[row + 1] - c->t_off[row]);
    static const uint8_t sep = 0x1f;
    Sha sha;
    char qid[16];
    sha_init(&sha);  /* ids.query_id: split, normal image URL, page URL, text joined by \x1f */
    sha_update(&sha, (const uint8_t *)c->split, (size_t)c->split_len);
    sha_update(&sha, &sep, 1);
    sha_update(&sha, (const uint8_t *)c->normal.data, c->normal.len);
    sha_update(&sha, &sep, 1);
    sha_update(&sha, page, page_len);
    sha_update(&sha, &sep, 1);
    sha_update(&sha, text, text_len);
    sha_hex16(&sha, qid);
    if (buf_i64(&c->rows, row) < 0 || buf_put(&c->qid.data, c->split, (size_t)c->split_len) < 0 ||
        buf_put(&c->qid.data, "-", 1) < 0 || strcol_add(&c->qid, qid, 16) < 0 ||
        strcol_add(&c->target, target, 16) < 0 || buf_i32(&c->num_entities, (int32_t)count) < 0)
        return -1;
    /* masked text: the text with each span replaced by [MASK_i] */
    uint32_t cursor = 0;
    char mask[32];
    for (size_t k = 0; k < c->nspans; k++) {
        const Span *s = &c->spans[k];
        uint32_t b0 = c->boff[s->start], b1 = c->boff[s->end];
        int len = format_mask(mask, c->mask_of[k]);
        int32_t e = s->entity;
        if (buf_put(&c->masked.data, text + cursor, b0 - cursor) < 0 || buf_put(&c->masked.data, mask, (size_t)len) < 0 ||
            buf_i32(&c->m_mask, c->mask_of[k]) < 0 || buf_i32(&c->m_start, s->start) < 0 || buf_i32(&c->m_end, s->end) < 0 ||
            strcol_add(&c->m_eid, c->e_data + c->e_off[e], (size_t)(c->e_off[e + 1] - c->e_off[e])) < 0 ||
            strcol_add(&c->m_surface, text + b0, b1 - b0) < 0)
            return -1;
        cursor = b1;
    }
    if (strcol_add(&c->masked, text + cursor, text_len - cursor) < 0) return -1;
    for (size_t j = 0; j < count; j++) {
        int32_t e = c->order[j];
        if (strcol_add(&c->ent_ids, c->e_data + c->e_off[e], (size_t)(c->e_off[e + 1] - c->e_off[e])) < 0 ||
            strcol_add(&c->ent_urls, c->eu_data + c->eu_off[e], (size_t)(c->eu_off[e + 1] - c->eu_off[e])) < 0)
            return -1;
    }
    int32_t lists = (int32_t)(c->ent_ids.offsets.len / 4 - 1), mentions = (int32_t)(c->m_mask.len / 4);
    return buf_i32(&c->list_off, lists) < 0 || buf_i32(&c->ment_off, mentions) < 0 ? -1 : 0;
}

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

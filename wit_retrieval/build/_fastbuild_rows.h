/*
 * The rows half of _fastbuild.c (included there): one WIT row at a time, linked, filtered and
 * written to the output columns as shard._queries_python does it (_fastbuild_batch.h runs it
 * over a whole Arrow batch).
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

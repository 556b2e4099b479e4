/* Optional C accelerator for fixserver/codec.py (CPython only; the pure-Python code is the
 * reference and the fallback, e.g. on PyPy or where no compiler was available).
 *
 * It does exactly what the pure fast paths do, in one call each, and nothing else:
 *
 *   next_frame(buf, pos, max_message_size, tag_table)
 *       -> (end, raw, tags, values) | None
 *     The pure FrameDecoder.next_message fast path: a complete frame at buf[pos:] whose header
 *     matches 8=<1-29 non-SOH bytes><SOH>9=<1-9 digits><SOH>, that fits in max_message_size,
 *     ends in a trailer 10=nnn<SOH> with nnn in 000-255 equal to the byte sum of the rest modulo
 *     256, and whose fields are all tag=value<SOH> with no '=' in a value and every tag a
 *     canonical number whose tag_table entry is not None. tags are the tag_table entries (the
 *     canonical tag bytes, shared objects), values new bytes objects. For anything else
 *     (incomplete, garbled, oversize, data fields, odd tags) it returns None and the caller's
 *     careful path decides from scratch, so no unusual case is handled here.
 *
 *   encode_message(prefix, fields) -> bytes | None
 *     prefix is b"8=<BeginString><SOH>9="; fields an exact list or tuple of exact 2-tuples
 *     (int tag, value bytes, str of code points below 256, or int). Returns prefix +
 *     BodyLength + SOH + tag=value<SOH>... + 10=nnn<SOH>, the same bytes as the pure encode(),
 *     or None when any field has another shape (the pure code then converts or rejects it).
 *
 *   frame_body(prefix, body) -> bytes | None
 *     prefix + len(body) + SOH + body + 10=nnn<SOH> (the pure frame_body) for an exact bytes
 *     body; None for any other body type.
 *
 * Every index is checked against the buffer bounds before it is read. The only references
 * created are the returned objects; every error path releases what it made.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Keep in step with codec.py: _TAG_TABLE_SIZE, MAX_BEGIN_STRING_FIELD, MAX_BODY_LENGTH_DIGITS,
 * TRAILER_SIZE. */
#define TAG_TABLE_SIZE 10000
#define MAX_TAG_DIGITS 4
#define MAX_BEGIN_STRING 29 /* MAX_BEGIN_STRING_FIELD - len("8=") - len(SOH) */
#define MAX_BODY_LENGTH_DIGITS 9
#define TRAILER_SIZE 7
#define SOH '\x01'

static int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Count the fields of data[0:size) if every one is <canonical tag>=<value><SOH> with no '=' or
 * SOH in the value and a tag whose table entry is not None; -1 if any is not. */
static Py_ssize_t
count_fast_fields(const unsigned char *data, Py_ssize_t size, PyObject *table)
{
    Py_ssize_t i = 0, fields = 0;
    while (i < size) {
        Py_ssize_t start = i;
        int tag = 0;
        while (i < size && is_digit(data[i])) {
            if (i - start == MAX_TAG_DIGITS) {
                return -1; /* 5+ digits: not below TAG_TABLE_SIZE */
            }
            tag = tag * 10 + (data[i] - '0');
            i++;
        }
        if (i == start || data[start] == '0' || i == size || data[i] != '=') {
            return -1; /* empty tag, leading zero (or 0), non-digit, or no '=' */
        }
        if (PyTuple_GET_ITEM(table, tag) == Py_None) {
            return -1; /* a data-length tag: the careful parser reads its data field */
        }
        i++;
        while (i < size && data[i] != SOH) {
            if (data[i] == '=') {
                return -1;
            }
            i++;
        }
        if (i == size) {
            return -1; /* last field not terminated */
        }
        i++;
        fields++;
    }
    return fields;
}

/* Split data[0:size), already accepted by count_fast_fields with `fields` fields. Returns a new
 * (tags, values) pair of lists through the out parameters; 0 on success, -1 with an exception. */
static int
split_fast_fields(const unsigned char *data, Py_ssize_t size, Py_ssize_t fields,
                  PyObject *table, PyObject **tags_out, PyObject **values_out)
{
    PyObject *tags = PyList_New(fields);
    PyObject *values = PyList_New(fields);
    if (tags == NULL || values == NULL) {
        goto error;
    }
    Py_ssize_t i = 0;
    for (Py_ssize_t k = 0; k < fields; k++) {
        int tag = 0;
        while (i < size && is_digit(data[i]) && tag < TAG_TABLE_SIZE) {
            tag = tag * 10 + (data[i] - '0');
            i++;
        }
        Py_ssize_t value_start = i + 1;
        const unsigned char *soh = NULL;
        if (value_start <= size) {
            soh = memchr(data + value_start, SOH, (size_t)(size - value_start));
        }
        if (i == size || data[i] != '=' || tag >= TAG_TABLE_SIZE || soh == NULL) {
            /* count_fast_fields accepted these bytes; not reachable unless they changed. */
            PyErr_SetString(PyExc_RuntimeError, "frame changed while it was split");
            goto error;
        }
        Py_ssize_t value_end = (Py_ssize_t)(soh - data);
        PyObject *key = PyTuple_GET_ITEM(table, tag);
        PyObject *value = PyBytes_FromStringAndSize((const char *)data + value_start,
                                                    value_end - value_start);
        if (value == NULL) {
            goto error;
        }
        Py_INCREF(key);
        PyList_SET_ITEM(tags, k, key);
        PyList_SET_ITEM(values, k, value);
        i = value_end + 1;
    }
    *tags_out = tags;
    *values_out = values;
    return 0;
error:
    Py_XDECREF(tags);
    Py_XDECREF(values);
    return -1;
}

static PyObject *
next_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "next_frame(buf, pos, max_message_size, tag_table) takes 4 arguments");
        return NULL;
    }
    PyObject *buf = args[0];
    PyObject *table = args[3];
    if (!PyBytes_Check(buf)) {
        PyErr_SetString(PyExc_TypeError, "buf must be bytes");
        return NULL;
    }
    if (!PyTuple_Check(table) || PyTuple_GET_SIZE(table) < TAG_TABLE_SIZE) {
        PyErr_SetString(PyExc_TypeError, "tag_table must be a tuple of 10000 entries");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t max_size = PyLong_AsSsize_t(args[2]);
    if (max_size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(buf);
    Py_ssize_t size = PyBytes_GET_SIZE(buf);
    if (pos < 0 || pos > size) {
        PyErr_SetString(PyExc_ValueError, "pos is outside buf");
        return NULL;
    }

    /* Header: 8=<1-29 non-SOH bytes><SOH>9=<1-9 digits><SOH> */
    if (size - pos < 2 || data[pos] != '8' || data[pos + 1] != '=') {
        Py_RETURN_NONE;
    }
    Py_ssize_t begin = pos + 2;
    Py_ssize_t window = size - begin;
    if (window > MAX_BEGIN_STRING + 1) {
        window = MAX_BEGIN_STRING + 1;
    }
    const unsigned char *soh1 = memchr(data + begin, SOH, (size_t)window);
    if (soh1 == NULL || soh1 == data + begin) {
        Py_RETURN_NONE;
    }
    Py_ssize_t i = (Py_ssize_t)(soh1 - data) + 1;
    if (size - i < 2 || data[i] != '9' || data[i + 1] != '=') {
        Py_RETURN_NONE;
    }
    i += 2;
    Py_ssize_t digits_start = i;
    Py_ssize_t body_length = 0;
    while (i < size && is_digit(data[i])) {
        if (i - digits_start == MAX_BODY_LENGTH_DIGITS) {
            Py_RETURN_NONE;
        }
        body_length = body_length * 10 + (data[i] - '0');
        i++;
    }
    if (i == digits_start || i == size || data[i] != SOH) {
        Py_RETURN_NONE;
    }
    Py_ssize_t header_end = i + 1;

    /* Whole frame present and within the size bound (no overflow: both sides are < size). */
    if (body_length > size - header_end - TRAILER_SIZE) {
        Py_RETURN_NONE;
    }
    Py_ssize_t end = header_end + body_length + TRAILER_SIZE;
    if (end - pos > max_size) {
        Py_RETURN_NONE;
    }

    /* Trailer 10=nnn<SOH> with nnn in 000-255, equal to the byte sum before it modulo 256. */
    const unsigned char *trailer = data + end - TRAILER_SIZE;
    if (trailer[0] != '1' || trailer[1] != '0' || trailer[2] != '=' || !is_digit(trailer[3])
        || !is_digit(trailer[4]) || !is_digit(trailer[5]) || trailer[6] != SOH) {
        Py_RETURN_NONE;
    }
    unsigned int declared = (unsigned int)(trailer[3] - '0') * 100
                            + (unsigned int)(trailer[4] - '0') * 10
                            + (unsigned int)(trailer[5] - '0');
    if (declared > 255) {
        Py_RETURN_NONE;
    }
    unsigned int total = 0;
    for (const unsigned char *p = data + pos; p < trailer; p++) {
        total += *p;
    }
    if ((total & 0xFF) != declared) {
        Py_RETURN_NONE;
    }

    /* Fields, the header and the trailer included. */
    const unsigned char *frame = data + pos;
    Py_ssize_t frame_size = end - pos;
    Py_ssize_t fields = count_fast_fields(frame, frame_size, table);
    if (fields < 0) {
        Py_RETURN_NONE;
    }
    PyObject *tags, *values;
    if (split_fast_fields(frame, frame_size, fields, table, &tags, &values) < 0) {
        return NULL;
    }
    PyObject *raw;
    if (pos == 0 && end == size) {
        Py_INCREF(buf);
        raw = buf;
    }
    else {
        raw = PyBytes_FromStringAndSize((const char *)frame, frame_size);
    }
    PyObject *end_obj = raw == NULL ? NULL : PyLong_FromSsize_t(end);
    if (end_obj == NULL) {
        Py_XDECREF(raw);
        Py_DECREF(tags);
        Py_DECREF(values);
        return NULL;
    }
    PyObject *result = PyTuple_New(4);
    if (result == NULL) {
        Py_DECREF(end_obj);
        Py_DECREF(raw);
        Py_DECREF(tags);
        Py_DECREF(values);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, end_obj);
    PyTuple_SET_ITEM(result, 1, raw);
    PyTuple_SET_ITEM(result, 2, tags);
    PyTuple_SET_ITEM(result, 3, values);
    return result;
}

/* Decimal digits of n into out (at least 21 bytes); returns how many. */
static Py_ssize_t
format_decimal(long long n, char *out)
{
    char digits[24];
    Py_ssize_t count = 0;
    unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    do {
        digits[count++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    Py_ssize_t written = 0;
    if (n < 0) {
        out[written++] = '-';
    }
    while (count > 0) {
        out[written++] = digits[--count];
    }
    return written;
}

/* The wire bytes of a tag (an exact int) or a value (exact bytes, an exact str whose characters
 * are all below 256, i.e. its latin-1 encoding, or an exact int) the way the pure code writes
 * them: b"%d" for ints. Sets *data and *size (digits is the scratch space for numbers, at least
 * 21 bytes) and returns 1, or returns 0 for anything else (bool, big int, other types). */
static int
field_part(PyObject *obj, int is_value, char *digits, const char **data, Py_ssize_t *size)
{
    if (PyLong_CheckExact(obj)) {
        int overflow = 0;
        long long number = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow != 0 || (number == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        *size = format_decimal(number, digits);
        *data = digits;
        return 1;
    }
    if (!is_value) {
        return 0;
    }
    if (PyBytes_CheckExact(obj)) {
        *data = PyBytes_AS_STRING(obj);
        *size = PyBytes_GET_SIZE(obj);
        return 1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_CheckExact(obj) && PyUnicode_IS_READY(obj)
        && PyUnicode_KIND(obj) == PyUnicode_1BYTE_KIND) {
#else
    if (PyUnicode_CheckExact(obj) && PyUnicode_KIND(obj) == PyUnicode_1BYTE_KIND) {
#endif
        /* One byte per character (code points 0-255): these bytes are the latin-1 encoding. */
        *data = (const char *)PyUnicode_1BYTE_DATA(obj);
        *size = PyUnicode_GET_LENGTH(obj);
        return 1;
    }
    return 0;
}

/* Write header + body + trailer into one new bytes object. The body is either `body` (when not
 * NULL) or the fields of `seq` (checked by field_part, `body_size` bytes in total). */
static PyObject *
assemble(PyObject *prefix, const char *body, PyObject *seq, Py_ssize_t body_size)
{
    char length_digits[24];
    Py_ssize_t length_size = format_decimal(body_size, length_digits);
    Py_ssize_t prefix_size = PyBytes_GET_SIZE(prefix);
    Py_ssize_t head_size = prefix_size + length_size + 1;
    if (body_size > PY_SSIZE_T_MAX - head_size - TRAILER_SIZE) {
        return PyErr_NoMemory();
    }
    Py_ssize_t total_size = head_size + body_size + TRAILER_SIZE;
    PyObject *result = PyBytes_FromStringAndSize(NULL, total_size);
    if (result == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(result);
    char *w = out;
    memcpy(w, PyBytes_AS_STRING(prefix), (size_t)prefix_size);
    w += prefix_size;
    memcpy(w, length_digits, (size_t)length_size);
    w += length_size;
    *w++ = SOH;
    if (body != NULL) {
        memcpy(w, body, (size_t)body_size);
        w += body_size;
    }
    else {
        Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
        PyObject **items = PySequence_Fast_ITEMS(seq);
        char *body_end = w + body_size;
        for (Py_ssize_t k = 0; k < count; k++) {
            /* The caller checked every field and no Python code has run since. */
            PyObject *item = items[k];
            char tag_digits[24], value_digits[24];
            const char *tag_data, *value_data;
            Py_ssize_t tag_size, value_size;
            if (field_part(PyTuple_GET_ITEM(item, 0), 0, tag_digits, &tag_data, &tag_size) != 1
                || field_part(PyTuple_GET_ITEM(item, 1), 1, value_digits, &value_data,
                              &value_size) != 1
                || tag_size + 2 + value_size > body_end - w) {
                Py_DECREF(result);
                PyErr_SetString(PyExc_RuntimeError, "fields changed while they were encoded");
                return NULL;
            }
            memcpy(w, tag_data, (size_t)tag_size);
            w += tag_size;
            *w++ = '=';
            memcpy(w, value_data, (size_t)value_size);
            w += value_size;
            *w++ = SOH;
        }
        if (w != body_end) {
            Py_DECREF(result);
            PyErr_SetString(PyExc_RuntimeError, "fields changed while they were encoded");
            return NULL;
        }
    }
    unsigned int sum = 0;
    for (const unsigned char *p = (const unsigned char *)out; p < (const unsigned char *)w; p++) {
        sum += *p;
    }
    sum &= 0xFF;
    w[0] = '1';
    w[1] = '0';
    w[2] = '=';
    w[3] = (char)('0' + sum / 100);
    w[4] = (char)('0' + sum / 10 % 10);
    w[5] = (char)('0' + sum % 10);
    w[6] = SOH;
    return result;
}

static PyObject *
encode_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encode_message(prefix, fields) takes 2 arguments");
        return NULL;
    }
    PyObject *prefix = args[0];
    PyObject *seq = args[1];
    if (!PyBytes_Check(prefix)) {
        PyErr_SetString(PyExc_TypeError, "prefix must be bytes");
        return NULL;
    }
    if (!PyList_CheckExact(seq) && !PyTuple_CheckExact(seq)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t body_size = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *item = items[k];
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2) {
            Py_RETURN_NONE;
        }
        char tag_digits[24], value_digits[24];
        const char *tag_data, *value_data;
        Py_ssize_t tag_size, value_size;
        if (field_part(PyTuple_GET_ITEM(item, 0), 0, tag_digits, &tag_data, &tag_size) != 1
            || field_part(PyTuple_GET_ITEM(item, 1), 1, value_digits, &value_data,
                          &value_size) != 1) {
            Py_RETURN_NONE; /* the pure code converts (or rejects) other values */
        }
        if (value_size > PY_SSIZE_T_MAX - tag_size - 2 - body_size) {
            return PyErr_NoMemory();
        }
        body_size += tag_size + 2 + value_size;
    }
    return assemble(prefix, NULL, seq, body_size);
}

static PyObject *
frame_body(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "frame_body(prefix, body) takes 2 arguments");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "prefix must be bytes");
        return NULL;
    }
    if (!PyBytes_CheckExact(args[1])) {
        Py_RETURN_NONE; /* the pure code formats other buffer types */
    }
    return assemble(args[0], PyBytes_AS_STRING(args[1]), NULL, PyBytes_GET_SIZE(args[1]));
}

static PyMethodDef accel_methods[] = {
    {"next_frame", (PyCFunction)(void (*)(void))next_frame, METH_FASTCALL,
     "next_frame(buf, pos, max_message_size, tag_table) -> (end, raw, tags, values) or None"},
    {"encode_message", (PyCFunction)(void (*)(void))encode_message, METH_FASTCALL,
     "encode_message(prefix, fields) -> complete message bytes, or None for other field shapes"},
    {"frame_body", (PyCFunction)(void (*)(void))frame_body, METH_FASTCALL,
     "frame_body(prefix, body) -> prefix + BodyLength + SOH + body + CheckSum field, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef_Slot accel_slots[] = {
    {0, NULL},
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fixserver._codec_accel",
    .m_doc = "C fast paths for fixserver.codec (optional; the pure-Python code is the reference).",
    .m_size = 0,
    .m_methods = accel_methods,
    .m_slots = accel_slots,
};

PyMODINIT_FUNC
PyInit__codec_accel(void)
{
    return PyModuleDef_Init(&accel_module);
}

#ifndef RELAY_CHIREDIS_SHIM_H
#define RELAY_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * A reply kept flat while hiredis parses it, in place of hiredis's reply objects (an allocation
 * per value, another per string, another per array's elements, all freed one by one).
 *
 * hiredis calls the functions below as it reads each value, an array before its elements; they
 * append a node per value and the bytes of each string to two buffers that live as long as the
 * reader and are reused from reply to reply. When redisReaderGetReply hands out a reply, the
 * tape holds that reply alone, in that order; read it, then relay_resp_tape_reset.
 */

/* One value of a reply. */
typedef struct relay_resp_node {
    int type;           /* REDIS_REPLY_* */
    int count;          /* an array's elements */
    long long integer;  /* an integer's value */
    size_t offset;      /* where a string's bytes start in the tape's bytes */
    size_t length;      /* a string's length */
} relay_resp_node;

typedef struct relay_resp_tape {
    relay_resp_node *nodes;
    size_t node_count;
    size_t node_capacity;
    char *bytes;
    size_t byte_count;
    size_t byte_capacity;
} relay_resp_tape;

/* Buffers past these sizes are let go once their reply is read, not kept for the next. */
#define RELAY_RESP_TAPE_KEPT_NODES 4096
#define RELAY_RESP_TAPE_KEPT_BYTES (256 * 1024)

/* Appends a value; NULL (hiredis: out of memory) if a buffer cannot grow. */
static inline void *relay_resp_tape_push(
    const redisReadTask *task, int type, int count, long long integer, const char *str, size_t len
) {
    relay_resp_tape *tape = (relay_resp_tape *)task->privdata;
    if (tape->node_count == tape->node_capacity) {
        size_t capacity = tape->node_capacity ? tape->node_capacity * 2 : 64;
        relay_resp_node *nodes = (relay_resp_node *)realloc(tape->nodes, capacity * sizeof(relay_resp_node));
        if (nodes == NULL) return NULL;
        tape->nodes = nodes;
        tape->node_capacity = capacity;
    }
    size_t offset = tape->byte_count;
    if (len > 0) {
        if (len > SIZE_MAX / 4 - tape->byte_count) return NULL;
        if (tape->byte_capacity - tape->byte_count < len) {
            size_t capacity = tape->byte_capacity ? tape->byte_capacity : 4096;
            while (capacity - tape->byte_count < len) capacity *= 2;
            char *bytes = (char *)realloc(tape->bytes, capacity);
            if (bytes == NULL) return NULL;
            tape->bytes = bytes;
            tape->byte_capacity = capacity;
        }
        memcpy(tape->bytes + offset, str, len);
        tape->byte_count += len;
    }
    relay_resp_node *node = &tape->nodes[tape->node_count++];
    node->type = type;
    node->count = count;
    node->integer = integer;
    node->offset = offset;
    node->length = len;
    /* Any non-NULL object will do: the tape is the reply. */
    return tape;
}

static inline void *relay_resp_tape_string(const redisReadTask *task, char *str, size_t len) {
    return relay_resp_tape_push(task, task->type, 0, 0, str, len);
}

static inline void *relay_resp_tape_array(const redisReadTask *task, int elements) {
    return relay_resp_tape_push(task, REDIS_REPLY_ARRAY, elements, 0, NULL, 0);
}

static inline void *relay_resp_tape_integer(const redisReadTask *task, long long value) {
    return relay_resp_tape_push(task, REDIS_REPLY_INTEGER, 0, value, NULL, 0);
}

static inline void *relay_resp_tape_nil(const redisReadTask *task) {
    return relay_resp_tape_push(task, REDIS_REPLY_NIL, 0, 0, NULL, 0);
}

/* Empties the tape; its buffers are kept unless they grew past the sizes above. */
static inline void relay_resp_tape_reset(relay_resp_tape *tape) {
    tape->node_count = 0;
    tape->byte_count = 0;
    if (tape->node_capacity > RELAY_RESP_TAPE_KEPT_NODES) {
        free(tape->nodes);
        tape->nodes = NULL;
        tape->node_capacity = 0;
    }
    if (tape->byte_capacity > RELAY_RESP_TAPE_KEPT_BYTES) {
        free(tape->bytes);
        tape->bytes = NULL;
        tape->byte_capacity = 0;
    }
}

/* hiredis frees a reply it will not hand out (on a parse error, or with the reader). */
static inline void relay_resp_tape_discard(void *object) {
    relay_resp_tape_reset((relay_resp_tape *)object);
}

/* A reader whose replies go to `tape` (zeroed by the caller; freed by it after the reader). */
static inline redisReader *relay_resp_tape_reader_create(relay_resp_tape *tape) {
    static redisReplyObjectFunctions functions = {
        relay_resp_tape_string,
        relay_resp_tape_array,
        relay_resp_tape_integer,
        relay_resp_tape_nil,
        relay_resp_tape_discard,
    };
    redisReader *reader = redisReaderCreateWithFunctions(&functions);
    if (reader != NULL) reader->privdata = tape;
    return reader;
}

/* Frees the tape's buffers. */
static inline void relay_resp_tape_free(relay_resp_tape *tape) {
    free(tape->nodes);
    free(tape->bytes);
    tape->nodes = NULL;
    tape->bytes = NULL;
    tape->node_count = tape->node_capacity = tape->byte_count = tape->byte_capacity = 0;
}

#endif

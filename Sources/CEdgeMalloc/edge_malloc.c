#include "edge_malloc.h"

// stdlib.h first: it defines __GLIBC__ (through features.h) on glibc.
#include <stdlib.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

void apiary_edge_tune_malloc(void) {
#if defined(__GLIBC__)
    // One arena for every thread instead of one per thread (up to 8 per core): each arena is
    // a 64 MiB reservation whose touched pages stay resident, and the client's threads (the
    // Swift pool, the I/O thread, libzmq's) allocate little and rarely at once. An operator's
    // MALLOC_ARENA_MAX wins.
    if (getenv("MALLOC_ARENA_MAX") == NULL) mallopt(M_ARENA_MAX, 1);
    // A fixed mmap threshold: model-sized buffers (an update, a broadcast being assembled) are
    // mapped and unmapped whole, so their pages go back to the system when freed. Left
    // dynamic, glibc raises the threshold after the first such free and later ones come from
    // the heap, where freed space stays resident.
    if (getenv("MALLOC_MMAP_THRESHOLD_") == NULL) mallopt(M_MMAP_THRESHOLD, 64 * 1024);
#endif
}

#ifndef APIARY_EDGE_MALLOC_H
#define APIARY_EDGE_MALLOC_H

/// glibc's malloc tuned for a small resident set: call once, first thing in main, before any
/// thread starts (a thread takes its arena at its first allocation). Does nothing elsewhere.
void apiary_edge_tune_malloc(void);

#endif

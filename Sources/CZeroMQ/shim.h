// The only C header Apiary imports: Debian's libzmq (libzmq3-dev, 4.3.4, no draft API).
#ifndef APIARY_CZEROMQ_SHIM_H
#define APIARY_CZEROMQ_SHIM_H
#include <zmq.h>
#endif

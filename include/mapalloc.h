/* mapalloc: the umbrella header. Includes every layer's public header. */
#ifndef MAPALLOC_H
#define MAPALLOC_H
#include "mapalloc/pages.h"
#if __has_include("mapalloc/pool.h")
#include "mapalloc/pool.h"
#endif
#if __has_include("mapalloc/arena.h")
#include "mapalloc/arena.h"
#endif
#if __has_include("mapalloc/heap.h")
#include "mapalloc/heap.h"
#endif
#if __has_include("mapalloc/prof.h")
#include "mapalloc/prof.h"
#endif
#endif

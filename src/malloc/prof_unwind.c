/* The profiler's stack walk: x86-64 call frame information (.eh_frame) read directly, with
 * the rule of each return address cached, so a sample's stack costs a table lookup and two
 * loads per frame instead of libgcc's FDE search and CFA program per frame (glibc's
 * backtrace(): 7% of a profiled churn run's time at the default rate, 1.7 us a sample).
 *
 * Only what compilers emit for ordinary x86-64 code is read: a canonical frame address
 * (CFA) of rsp or rbp plus an offset, rbp saved at an offset from the CFA (or not saved),
 * the return address at CFA - 8. Anything else (a CFA expression, a realigned stack, a
 * signal frame, 64-bit DWARF, an unknown opcode) makes prof_unwind return -1 and the caller
 * falls back to backtrace(); a return address with no FDE ends the stack, as in libgcc.
 * The walk allocates nothing and takes no lock on a cached path: FDEs are found with
 * glibc's _dl_find_object (lock-free, made for unwinders), and rules go into a table from
 * the page layer whose entries are written once (under a trylock: a busy writer skips
 * caching; so does a fork child whose parent forked while another thread held the lock)
 * and never evicted, so a reader that finds its key reads a complete rule.
 */
#include "malloc/prof.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "os/os.h"

#if defined(__x86_64__) && defined(DLFO_EH_SEGMENT_TYPE)
#define PROF_UNWIND_FAST 1
#else
#define PROF_UNWIND_FAST 0
#endif

#if PROF_UNWIND_FAST

/* ---- a frame's rule, packed in 64 bits (0: none yet) ---- */
enum {
  RULE_VALID = 1 << 0,
  RULE_CFA_RBP = 1 << 1,   /* CFA = rbp + off (else rsp + off) */
  RULE_RBP_SAVED = 1 << 2, /* the caller's rbp is at CFA + rbp_off */
  RULE_END = 1 << 3,       /* the return address is undefined: the outermost frame */
  RULE_FAIL = 1 << 4,      /* beyond this reader: the caller uses backtrace() */
};
typedef struct unw_rule {
  uint32_t flags;
  int32_t cfa_off;
  int32_t rbp_off;
} unw_rule;

static uint64_t rule_pack(unw_rule r) {
  return (uint64_t)(r.flags & 0xff) | (uint64_t)(uint32_t)r.cfa_off << 8 |
         (uint64_t)(uint16_t)(int16_t)r.rbp_off << 40;
}
static unw_rule rule_unpack(uint64_t v) {
  return (unw_rule){(uint32_t)(v & 0xff), (int32_t)(uint32_t)(v >> 8),
                    (int16_t)(uint16_t)(v >> 40)};
}

/* ---- the cache: open addressing, written once per entry ---- */
/* Entries (16 bytes): 64 KiB, resident once a few hundred return addresses are in (they
 * hash at random). */
#define UNW_CACHE_SIZE  4096u
#define UNW_CACHE_PROBE 16
typedef struct unw_entry {
  _Atomic uintptr_t ip; /* 0: empty; published after `rule` */
  uint64_t rule;
} unw_entry;
static unw_entry *unw_cache;
static pthread_mutex_t unw_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t unw_hash(uintptr_t ip) {
  return (size_t)((ip * 0x9E3779B97F4A7C15ull) >> 51) & (UNW_CACHE_SIZE - 1);
}

static uint64_t unw_cache_find(uintptr_t ip) {
  if (!unw_cache) return 0;
  size_t h = unw_hash(ip);
  for (unsigned i = 0; i < UNW_CACHE_PROBE; i++) {
    unw_entry *e = &unw_cache[(h + i) & (UNW_CACHE_SIZE - 1)];
    uintptr_t k = atomic_load_explicit(&e->ip, memory_order_acquire);
    if (k == ip) return e->rule;
    if (k == 0) return 0;
  }
  return 0;
}

static void unw_cache_add(uintptr_t ip, uint64_t rule) {
  if (!unw_cache || pthread_mutex_trylock(&unw_lock) != 0) return;
  size_t h = unw_hash(ip);
  for (unsigned i = 0; i < UNW_CACHE_PROBE; i++) {
    unw_entry *e = &unw_cache[(h + i) & (UNW_CACHE_SIZE - 1)];
    uintptr_t k = atomic_load_explicit(&e->ip, memory_order_relaxed);
    if (k == ip) break;
    if (k != 0) continue;
    e->rule = rule;
    atomic_store_explicit(&e->ip, ip, memory_order_release);
    break;
  }
  pthread_mutex_unlock(&unw_lock);
}

/* ---- DWARF reading ---- */
typedef struct unw_reader {
  const uint8_t *p, *end;
  bool bad;
} unw_reader;

static uint64_t rd_uleb(unw_reader *r) {
  uint64_t v = 0;
  for (unsigned shift = 0; r->p < r->end && shift < 64; shift += 7) {
    uint8_t b = *r->p++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  r->bad = true;
  return 0;
}

static int64_t rd_sleb(unw_reader *r) {
  uint64_t v = 0;
  unsigned shift = 0;
  while (r->p < r->end && shift < 64) {
    uint8_t b = *r->p++;
    v |= (uint64_t)(b & 0x7f) << shift;
    shift += 7;
    if (!(b & 0x80)) {
      if (shift < 64 && (b & 0x40)) v |= ~(uint64_t)0 << shift;
      return (int64_t)v;
    }
  }
  r->bad = true;
  return 0;
}

static uint64_t rd_fixed(unw_reader *r, unsigned n) {
  if ((size_t)(r->end - r->p) < n) {
    r->bad = true;
    return 0;
  }
  uint64_t v = 0;
  memcpy(&v, r->p, n); /* little endian */
  r->p += n;
  return v;
}

/* The size of a pointer of encoding enc (DW_EH_PE_*: the low nibble), 0 if unknown. */
static unsigned enc_size(uint8_t enc) {
  switch (enc & 0x0f) {
  case 0x00:
    return 8; /* absptr */
  case 0x02:
  case 0x0a:
    return 2;
  case 0x03:
  case 0x0b:
    return 4;
  case 0x04:
  case 0x0c:
    return 8;
  default:
    return 0;
  }
}

/* The register rules this reader tracks. */
typedef struct unw_state {
  uint64_t cfa_reg;
  int64_t cfa_off;
  int64_t rbp_off;
  int64_t ra_off;
  int rbp; /* 0 unchanged, 1 saved at CFA + rbp_off, 2 beyond us */
  int ra;  /* 0 at CFA + ra_off, 1 undefined, 2 beyond us */
} unw_state;

typedef struct unw_cie {
  uint64_t code_align;
  int64_t data_align;
  uint64_t ra_reg;
  uint8_t fde_enc;
  bool has_z;
  const uint8_t *insns, *end;
} unw_cie;

enum { REG_RBP = 6, REG_RSP = 7 };

static void set_offset(unw_state *s, const unw_cie *c, uint64_t reg, int64_t off) {
  if (reg == REG_RBP) {
    s->rbp = 1;
    s->rbp_off = off;
  } else if (reg == c->ra_reg) {
    s->ra = 0;
    s->ra_off = off;
  }
}

/* A rule other than "at an offset" (register, expression): beyond this reader when reg is
 * rbp or the return address, else of no interest. */
static void set_other(unw_state *s, const unw_cie *c, uint64_t reg) {
  if (reg == REG_RBP) s->rbp = 2;
  if (reg == c->ra_reg) s->ra = 2;
}

/* Runs the CFA program [p, end) from location loc until it passes pc. init: the state after
 * the CIE's program (DW_CFA_restore), NULL while running it. False: an op beyond us. */
static bool run_cfa(unw_state *s, const unw_state *init, const unw_cie *c, const uint8_t *p,
                    const uint8_t *end, uintptr_t loc, uintptr_t pc) {
  unw_state saved[4];
  unsigned nsaved = 0;
  unw_reader r = {p, end, false};
  while (r.p < r.end && !r.bad) {
    uint8_t op = *r.p++;
    uint64_t delta = 0, reg;
    switch (op >> 6) {
    case 1:
      delta = op & 0x3f;
      goto advance;
    case 2:
      set_offset(s, c, op & 0x3f, (int64_t)rd_uleb(&r) * c->data_align);
      continue;
    case 3:
      reg = op & 0x3f;
      goto restore;
    default:
      break;
    }
    switch (op) {
    case 0x00:
      continue; /* nop */
    case 0x02:
      delta = rd_fixed(&r, 1);
      goto advance;
    case 0x03:
      delta = rd_fixed(&r, 2);
      goto advance;
    case 0x04:
      delta = rd_fixed(&r, 4);
      goto advance;
    case 0x05: /* offset_extended */
      reg = rd_uleb(&r);
      set_offset(s, c, reg, (int64_t)rd_uleb(&r) * c->data_align);
      continue;
    case 0x06:
      reg = rd_uleb(&r);
      goto restore;
    case 0x07: /* undefined */
      reg = rd_uleb(&r);
      if (reg == c->ra_reg) s->ra = 1;
      if (reg == REG_RBP) s->rbp = 2;
      continue;
    case 0x08: /* same_value */
      reg = rd_uleb(&r);
      if (reg == REG_RBP) s->rbp = 0;
      if (reg == c->ra_reg) s->ra = 2;
      continue;
    case 0x09: /* register */
      reg = rd_uleb(&r);
      (void)rd_uleb(&r);
      set_other(s, c, reg);
      continue;
    case 0x0a:
      if (nsaved == 4) return false;
      saved[nsaved++] = *s;
      continue;
    case 0x0b: /* restore_state: the CFA rule too, as libgcc reads it (GCC's epilogues in
                  mid-function rely on it) */
      if (nsaved == 0) return false;
      *s = saved[--nsaved];
      continue;
    case 0x0c: /* def_cfa */
      s->cfa_reg = rd_uleb(&r);
      s->cfa_off = (int64_t)rd_uleb(&r);
      continue;
    case 0x0d:
      s->cfa_reg = rd_uleb(&r);
      continue;
    case 0x0e:
      s->cfa_off = (int64_t)rd_uleb(&r);
      continue;
    case 0x10:   /* expression */
    case 0x16: { /* val_expression */
      reg = rd_uleb(&r);
      uint64_t n = rd_uleb(&r);
      if ((uint64_t)(r.end - r.p) < n) return false;
      r.p += n;
      set_other(s, c, reg);
      continue;
    }
    case 0x11: /* offset_extended_sf */
      reg = rd_uleb(&r);
      set_offset(s, c, reg, rd_sleb(&r) * c->data_align);
      continue;
    case 0x12: /* def_cfa_sf */
      s->cfa_reg = rd_uleb(&r);
      s->cfa_off = rd_sleb(&r) * c->data_align;
      continue;
    case 0x13:
      s->cfa_off = rd_sleb(&r) * c->data_align;
      continue;
    case 0x14: /* val_offset */
    case 0x15: /* val_offset_sf */
      reg = rd_uleb(&r);
      if (op == 0x14)
        (void)rd_uleb(&r);
      else
        (void)rd_sleb(&r);
      set_other(s, c, reg);
      continue;
    case 0x2e:
      (void)rd_uleb(&r);
      continue; /* GNU_args_size */
    case 0x2f:  /* GNU_negative_offset_extended */
      reg = rd_uleb(&r);
      set_offset(s, c, reg, -(int64_t)rd_uleb(&r) * c->data_align);
      continue;
    default:
      return false; /* set_loc, def_cfa_expression, vendor ops */
    }
  advance:
    loc += delta * c->code_align;
    if (init && loc > pc) return true;
    continue;
  restore:
    if (!init) return false;
    if (reg == REG_RBP) {
      s->rbp = init->rbp;
      s->rbp_off = init->rbp_off;
    } else if (reg == c->ra_reg) {
      s->ra = init->ra;
      s->ra_off = init->ra_off;
    }
  }
  return !r.bad;
}

/* Reads the CIE at p (just past its length word, whose end is `end`). */
static bool read_cie(const uint8_t *p, const uint8_t *end, unw_cie *c) {
  unw_reader r = {p, end, false};
  if (rd_fixed(&r, 4) != 0) return false; /* CIE id */
  uint8_t version = (uint8_t)rd_fixed(&r, 1);
  if (version != 1 && version != 3) return false;
  const char *aug = (const char *)r.p;
  size_t alen = strnlen(aug, (size_t)(r.end - r.p));
  if (r.p + alen >= r.end) return false;
  r.p += alen + 1;
  c->code_align = rd_uleb(&r);
  c->data_align = rd_sleb(&r);
  c->ra_reg = version == 1 ? rd_fixed(&r, 1) : rd_uleb(&r);
  c->fde_enc = 0;
  c->has_z = aug[0] == 'z';
  if (c->has_z) {
    uint64_t n = rd_uleb(&r);
    const uint8_t *data_end = r.p + n;
    if (r.bad || n > (uint64_t)(r.end - r.p)) return false;
    for (size_t i = 1; i < alen; i++) {
      if (aug[i] == 'R') {
        c->fde_enc = (uint8_t)rd_fixed(&r, 1);
      } else if (aug[i] == 'L') {
        (void)rd_fixed(&r, 1);
      } else if (aug[i] == 'P') {
        unsigned sz = enc_size((uint8_t)rd_fixed(&r, 1));
        if (!sz) return false;
        (void)rd_fixed(&r, sz);
      } else {
        return false; /* 'S' (a signal frame) and anything else */
      }
    }
    r.p = data_end;
  } else if (alen) {
    return false;
  }
  c->insns = r.p;
  c->end = end;
  return !r.bad;
}

/* The FDE of pc in the object's .eh_frame_hdr binary-search table, NULL if none; *unread
 * when the table is in a form this reader does not take (the caller then declines rather
 * than end the stack there). */
static const uint8_t *find_fde(const uint8_t *hdr, uintptr_t pc, bool *unread) {
  /* version 1; eh_frame_ptr pcrel sdata4; fde_count udata4; table datarel sdata4 (what GNU
   * ld, gold, lld and mold write) */
  *unread = hdr[0] != 1 || hdr[1] != 0x1b || hdr[2] != 0x03 || hdr[3] != 0x3b;
  if (*unread) return NULL;
  uint32_t count;
  memcpy(&count, hdr + 8, 4);
  const int32_t *tab = (const int32_t *)(const void *)(hdr + 12);
  if (count == 0) return NULL;
  uint32_t lo = 0, hi = count; /* the last entry with start <= pc */
  while (hi - lo > 1) {
    uint32_t mid = lo + (hi - lo) / 2;
    if ((uintptr_t)(hdr + tab[2 * (size_t)mid]) <= pc)
      lo = mid;
    else
      hi = mid;
  }
  if ((uintptr_t)(hdr + tab[2 * (size_t)lo]) > pc) return NULL;
  return hdr + tab[2 * (size_t)lo + 1];
}

/* The rule at pc (a return address less one, or the walk's own first pc). */
static uint64_t rule_compute(uintptr_t pc) {
  unw_rule fail = {RULE_VALID | RULE_FAIL, 0, 0};
  unw_rule end = {RULE_VALID | RULE_END, 0, 0};
  struct dl_find_object dlfo;
  if (_dl_find_object((void *)pc, &dlfo) != 0) return rule_pack(end); /* no object: as libgcc */
  if (!dlfo.dlfo_eh_frame) return rule_pack(fail); /* libgcc would scan .eh_frame itself */
  bool unread;
  const uint8_t *fde = find_fde(dlfo.dlfo_eh_frame, pc, &unread);
  if (unread) return rule_pack(fail);
  if (!fde) return rule_pack(end);
  uint32_t flen, cie_off;
  memcpy(&flen, fde, 4);
  memcpy(&cie_off, fde + 4, 4);
  if (flen == 0 || flen == 0xffffffffu) return rule_pack(fail);
  const uint8_t *fend = fde + 4 + flen, *cie = fde + 4 - cie_off;
  uint32_t clen;
  memcpy(&clen, cie, 4);
  if (clen == 0 || clen == 0xffffffffu) return rule_pack(fail);
  unw_cie c;
  if (!read_cie(cie + 4, cie + 4 + clen, &c)) return rule_pack(fail);
  /* pc_begin (pcrel sdata4: what GCC and clang emit for x86-64 PIC and non-PIC) */
  if (c.fde_enc != 0x1b) return rule_pack(fail);
  unw_reader r = {fde + 8, fend, false};
  const uint8_t *at = r.p;
  uintptr_t begin = (uintptr_t)at + (uintptr_t)(int64_t)(int32_t)rd_fixed(&r, 4);
  uintptr_t range = (uintptr_t)rd_fixed(&r, 4);
  if (pc < begin || pc - begin >= range) return rule_pack(end);
  if (c.has_z) {
    uint64_t n = rd_uleb(&r);
    if (r.bad || n > (uint64_t)(r.end - r.p)) return rule_pack(fail);
    r.p += n;
  }
  if (r.bad) return rule_pack(fail);
  unw_state s = {.cfa_reg = REG_RSP, .ra = 2};
  if (!run_cfa(&s, NULL, &c, c.insns, c.end, begin, pc)) return rule_pack(fail);
  unw_state init = s;
  if (!run_cfa(&s, &init, &c, r.p, fend, begin, pc)) return rule_pack(fail);
  if (s.ra == 1) return rule_pack(end);
  if (s.ra != 0 || s.ra_off != -8 || s.rbp == 2) return rule_pack(fail);
  if (s.cfa_reg != REG_RSP && s.cfa_reg != REG_RBP) return rule_pack(fail);
  if (s.cfa_off <= 0 || s.cfa_off > INT32_MAX || s.rbp_off < INT16_MIN || s.rbp_off > INT16_MAX)
    return rule_pack(fail);
  unw_rule out = {RULE_VALID, (int32_t)s.cfa_off, (int32_t)s.rbp_off};
  if (s.cfa_reg == REG_RBP) out.flags |= RULE_CFA_RBP;
  if (s.rbp == 1) out.flags |= RULE_RBP_SAVED;
  return rule_pack(out);
}

static unw_rule rule_at(uintptr_t pc) {
  uint64_t v = unw_cache_find(pc);
  if (!v) {
    v = rule_compute(pc);
    unw_cache_add(pc, v);
  }
  return rule_unpack(v);
}

void prof_unwind_init(void) {
  unw_entry *t = os_alloc(UNW_CACHE_SIZE * sizeof(unw_entry), 0, false);
  if (!t) return; /* every frame computes its rule: slower, as right */
  os_name(t, UNW_CACHE_SIZE * sizeof(unw_entry), "mapalloc-prof");
  unw_cache = t;
}

__attribute__((noinline)) int prof_unwind(void **pcs, int max) {
  uintptr_t ip, sp, bp;
  /* One asm: the three are this function's state at one instruction boundary. */
  __asm__ volatile("lea 0(%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2"
                   : "=r"(ip), "=r"(sp), "=r"(bp));
  int n = 0;
  for (bool first = true; n < max; first = false) {
    /* A return address is the instruction after a call: its rule is the call's. */
    unw_rule r = rule_at(first ? ip : ip - 1);
    if (r.flags & RULE_FAIL) return -1;
    if (r.flags & RULE_END) break;
    uintptr_t cfa = ((r.flags & RULE_CFA_RBP) ? bp : sp) + (uintptr_t)(int64_t)r.cfa_off;
    if (cfa <= sp || (cfa & 7) != 0 || cfa - sp > ((uintptr_t)64 << 20)) return -1;
    uintptr_t ra = *(const uintptr_t *)(cfa - 8);
    if (r.flags & RULE_RBP_SAVED) bp = *(const uintptr_t *)(cfa + (intptr_t)r.rbp_off);
    sp = cfa;
    ip = ra;
    if (ip == 0) break;
    pcs[n++] = (void *)ip;
  }
  return n;
}

#else /* no _dl_find_object or not x86-64: backtrace() for every sample */

void prof_unwind_init(void) {}

int prof_unwind(void **pcs, int max) {
  (void)pcs;
  (void)max;
  return -1;
}

#endif

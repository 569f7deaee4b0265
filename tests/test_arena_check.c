/* ma_arena_check (include/mapalloc/arena.h, src/arena/arena_check.c): the arena's record
 * against /proc/self/maps. It passes through adds, protects, splits and removals, and
 * reports (aborting with its message) what is done to the range behind the arena's back:
 * an mprotect of part of a mapping or of a reserved page, an munmap, a file mapping moved
 * to another offset. The misuse runs in a forked child (tests/common.h). */
#include <criterion/criterion.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "mapalloc/arena.h"
#include "mapalloc/pages.h"

static size_t pg;

/* An arena of 64 pages: anonymous RW at pages 4..12, a memfd (32 pages) RO at 20..28
 * mapped from its page 3, the rest reserved. */
static ma_arena *arena_make(unsigned flags, int *fd_out) {
  pg = ma_page_size();
  ma_arena *a;
  cr_assert_eq(ma_arena_create(64 * pg, flags, &a), 0);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 4 * pg, 8 * pg, MA_PROT_READ | MA_PROT_WRITE), 0);
  int fd = memfd_create("arena_check", 0);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, (off_t)(32 * pg)), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 20 * pg, 8 * pg, fd, 3 * pg, MA_PROT_READ), 0);
  *fd_out = fd;
  return a;
}

static char *at(ma_arena *a, size_t page) {
  return (char *)ma_arena_base(a) + page * pg;
}

Test(arena_check, agrees_through_every_change) {
  int fd;
  ma_arena *a = arena_make(0, &fd);
  cr_assert_eq(ma_arena_check(a), 0);
  at(a, 5)[0] = 1;
  cr_assert_eq(ma_arena_protect(a, 6 * pg, 2 * pg, MA_PROT_READ), 0); /* splits the node */
  cr_assert_eq(ma_arena_check(a), 0);
  cr_assert_eq(ma_arena_protect(a, 22 * pg, pg, MA_PROT_NONE), 0); /* file node, split */
  cr_assert_eq(ma_arena_check(a), 0);
  cr_assert_eq(ma_arena_remove_mapping(a, 7 * pg, 16 * pg), 0); /* across both, splitting */
  cr_assert_eq(ma_arena_check(a), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 60 * pg, 4 * pg, fd, 0, MA_PROT_READ | MA_PROT_WRITE),
               0);                                                    /* up to the arena's end */
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, pg, MA_PROT_NONE), 0); /* as reserved looks */
  cr_assert_eq(ma_arena_check(a), 0);
  cr_assert_eq(ma_arena_count(a), 5); /* [0,1) [4,6) [6,7) [23,28) [60,64) */
  ma_arena_destroy(a);
  close(fd);
}

Test(arena_check, null_arena) {
  cr_assert_eq(ma_arena_check(NULL), -EINVAL);
}

static int check_from_callback(const ma_arena_mapping *m, void *ctx) {
  (void)m;
  return ma_arena_check(ctx) == 0 ? 0 : 1;
}

Test(arena_check, callable_from_a_foreach_callback) {
  int fd;
  ma_arena *a = arena_make(0, &fd);
  cr_assert_eq(ma_arena_foreach(a, check_from_callback, a), 0);
  ma_arena_destroy(a);
  close(fd);
}

/* The misuses, each in a child that must abort with the check's message. */
static void mprotect_part_of_a_mapping(void) {
  int fd;
  ma_arena *a = arena_make(0, &fd);
  if (mprotect(at(a, 6), pg, PROT_READ) != 0) _exit(3);
  ma_arena_check(a);
}

Test(arena_check, reports_an_mprotect_behind_its_back) {
  const char *want[] = {"check failed at", "arena_check.c", "the kernel has prot 0x1 private",
                        "the record 0x3 private", NULL};
  expect_abort_saying(mprotect_part_of_a_mapping, want);
}

static void mprotect_a_reserved_page(void) {
  int fd;
  ma_arena *a = arena_make(0, &fd);
  if (mprotect(at(a, 40), pg, PROT_READ | PROT_WRITE) != 0) _exit(3);
  ma_arena_check(a);
}

Test(arena_check, reports_a_reserved_page_made_accessible) {
  const char *want[] = {"check failed at", "are reserved in the record", "prot 0x3 private", NULL};
  expect_abort_saying(mprotect_a_reserved_page, want);
}

static void munmap_a_reserved_page(void) {
  int fd;
  ma_arena *a = arena_make(0, &fd);
  if (munmap(at(a, 50), pg) != 0) _exit(3);
  ma_arena_check(a);
}

Test(arena_check, reports_a_hole_in_the_reservation) {
  const char *want[] = {"check failed at", "not mapped at all", NULL};
  expect_abort_saying(munmap_a_reserved_page, want);
}

static void remap_file_at_another_offset(void) {
  int fd;
  ma_arena *a = arena_make(0, &fd);
  if (mmap(at(a, 21), pg, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) _exit(3);
  ma_arena_check(a);
}

Test(arena_check, reports_a_file_mapping_moved_to_another_offset) {
  const char *want[] = {"check failed at", "file offset 0 in the kernel, 0x", "in the record",
                        NULL};
  expect_abort_saying(remap_file_at_another_offset, want);
}

static void anon_over_a_file_mapping(void) {
  int fd;
  ma_arena *a = arena_make(0, &fd);
  if (mmap(at(a, 24), pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
    _exit(3);
  ma_arena_check(a);
}

Test(arena_check, reports_anonymous_memory_over_a_file_mapping) {
  const char *want[] = {"check failed at", "the kernel has prot 0x1 private",
                        "the record 0x1 shared", NULL};
  expect_abort_saying(anon_over_a_file_mapping, want);
}

/* A DONTFORK arena's mappings are not in a fork child (the reservation is): the check
 * accepts that there, and still reports a hole outside the mappings. */
Test(arena_check, dontfork_arena_in_a_fork_child) {
  int fd;
  ma_arena *a = arena_make(MA_MAP_DONTFORK, &fd);
  cr_assert_eq(ma_arena_check(a), 0);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    if (ma_arena_check(a) != 0) _exit(2);
    if (munmap(at(a, 50), pg) != 0) _exit(3);
    ma_arena_check(a); /* must abort */
    _exit(0);
  }
  int st;
  cr_assert_eq(waitpid(pid, &st, 0), pid);
  cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "child status 0x%x", st);
  ma_arena_destroy(a);
  close(fd);
}

/* Minimal Arm semihosting: host file I/O for the test harness, and exit. */
#ifndef TE_SEMIHOST_H
#define TE_SEMIHOST_H
#include <stdint.h>
#include <string.h>

int te_sh_call(int op, void *arg);
void te_sh_exit(int status) __attribute__((noreturn));

/* mode: 1 = "rb", 5 = "wb" (semihosting SYS_OPEN modes). Returns a handle or -1. */
static inline int te_sh_open(const char *path, int mode) {
    uint32_t blk[3] = {(uint32_t)(uintptr_t)path, (uint32_t)mode, (uint32_t)strlen(path)};
    return te_sh_call(0x01, blk);
}
/* Returns the number of bytes NOT read (0: all read). */
static inline int te_sh_read(int fd, void *buf, uint32_t n) {
    uint32_t blk[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)buf, n};
    return te_sh_call(0x06, blk);
}
static inline int te_sh_write(int fd, const void *buf, uint32_t n) {
    uint32_t blk[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)buf, n};
    return te_sh_call(0x05, blk);
}
static inline int te_sh_close(int fd) {
    uint32_t blk[1] = {(uint32_t)fd};
    return te_sh_call(0x02, blk);
}
#endif

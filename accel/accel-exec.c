/*
 * An accelerated tool, as the ARM build root sees it.
 *
 * Installed, statically linked for the worker host, in place of cc1, cc1plus,
 * as and ld.bfd of the build root's native toolchain. It executes the
 * host-native cross tool (REAL) with the command line the emulated gcc driver
 * or make gave it, after:
 *   - dropping LD_PRELOAD and LD_LIBRARY_PATH, which name the build root's
 *     ARM libraries (fakeroot's, for one) that a host program cannot load;
 *   - for the compiler proper (-DCOMPILER), adding -iprefix GCCLIB/ first, so
 *     the cross compiler's own include directories are the native gcc's
 *     (stddef.h, arm_neon.h, ...), and a caller's -iwithprefix resolves
 *     against the same prefix as with the native compiler;
 *   - for the linker (-DLINKER), pointing a -plugin that names the build
 *     root's ARM liblto_plugin.so (PLUGIN_FROM), which the gcc driver always
 *     passes, at the host build of the same plugin (PLUGIN_TO); LTO itself
 *     (lto-wrapper, lto1) stays emulated;
 *   - for cc1plus (-DCXX), appending the native libstdc++ header directories
 *     as -isystem after the caller's own, in the native order, unless the
 *     caller said -nostdinc or -nostdinc++.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef REAL
#error "build with -DREAL=\"/path/of/the/host/tool\""
#endif
#if defined(LINKER) && (!defined(PLUGIN_FROM) || !defined(PLUGIN_TO))
#error "the linker needs -DPLUGIN_FROM= -DPLUGIN_TO="
#endif
#if defined(COMPILER) && (!defined(GCCLIB) || !defined(TRIPLET) || !defined(GCCVER))
#error "the compiler proper needs -DGCCLIB= -DTRIPLET= -DGCCVER="
#endif

int main(int argc, char **argv)
{
    char **args = calloc((size_t)argc + 9, sizeof *args);
    if (!args)
        return 1;
    int k = 0;
    args[k++] = argv[0];
#ifdef COMPILER
    args[k++] = "-iprefix";
    args[k++] = GCCLIB "/";
#endif
    for (int i = 1; i < argc; i++) {
        args[k++] = argv[i];
#ifdef LINKER
        if (!strcmp(argv[i], "-plugin") || !strcmp(argv[i], "--plugin")) {
            if (i + 1 < argc && !strcmp(argv[i + 1], PLUGIN_FROM)) {
                args[k++] = PLUGIN_TO;
                i++;
            }
        } else if (!strcmp(argv[i], "-plugin=" PLUGIN_FROM) ||
                   !strcmp(argv[i], "--plugin=" PLUGIN_FROM)) {
            args[k - 1] = "--plugin=" PLUGIN_TO;
        }
#endif
    }
#ifdef CXX
    int std = 1;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-nostdinc") || !strcmp(argv[i], "-nostdinc++"))
            std = 0;
    if (std) {
        args[k++] = "-isystem";
        args[k++] = "/usr/include/c++/" GCCVER;
        args[k++] = "-isystem";
        args[k++] = "/usr/include/" TRIPLET "/c++/" GCCVER;
        args[k++] = "-isystem";
        args[k++] = "/usr/include/c++/" GCCVER "/backward";
    }
#endif
    args[k] = NULL;
    unsetenv("LD_PRELOAD");
    unsetenv("LD_LIBRARY_PATH");
    execv(REAL, args);
    fprintf(stderr, "obs-farm-accel: cannot run %s: %s\n", REAL, strerror(errno));
    return 127;
}

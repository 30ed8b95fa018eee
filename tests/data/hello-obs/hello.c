/* Prints the architecture it was compiled for; run during the build so an
 * emulated build proves that the target binary actually executes. */
#include <stdio.h>

#if defined(__aarch64__)
#define ARCH "aarch64"
#elif defined(__arm__)
#define ARCH "arm"
#elif defined(__x86_64__)
#define ARCH "x86_64"
#else
#define ARCH "unknown"
#endif

int main(void)
{
    printf("hello-obs: built for %s\n", ARCH);
    return 0;
}

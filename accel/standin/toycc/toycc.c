/* toycc: the stand-in "compiler" of the accelerator-from-source test.
 * `toycc --version` names its version and who built it; `toycc IN OUT`
 * "compiles" by copying. */
#include <stdio.h>
#include <string.h>

#ifndef VERSION
#error VERSION must be defined
#endif
#ifndef BUILT_AS
#error BUILT_AS must be defined
#endif

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("toycc %s (%s)\n", VERSION, BUILT_AS);
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: toycc --version | toycc IN OUT\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out) {
        perror("toycc");
        return 1;
    }
    int c;
    while ((c = getc(in)) != EOF)
        putc(c, out);
    return fclose(out) != 0;
}

// tiny: a static binary with no libc that exits at once, for the fast exec
// storm in bench/exec.sh. Build: cc -O2 -static -nostdlib -o tiny tiny.c
void _start(void)
{
#if defined(__x86_64__)
	__asm__ volatile("mov $60, %eax\n\txor %edi, %edi\n\tsyscall");
#elif defined(__aarch64__)
	__asm__ volatile("mov x8, #93\n\tmov x0, #0\n\tsvc #0");
#else
#error "tiny: unsupported architecture"
#endif
	for (;;)
		;
}

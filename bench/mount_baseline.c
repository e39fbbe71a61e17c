/*
 * The raw-syscall baseline for bench_mount.py: mount and unmount one overlay, over and over, with
 * nothing else around it (no lock, no reference file, no verification).
 *
 *   mount_baseline mount    ITERS VERIFY TARGET CWD DATAFILE
 *       ITERS x { mount("overlay", TARGET, "overlay", 0, data); umount2(TARGET, UMOUNT_NOFOLLOW) },
 *       data being DATAFILE's content (at most one page).
 *
 *   mount_baseline fsconfig ITERS VERIFY TARGET CWD UPPER WORK LOWERSFILE [KEY=VALUE | FLAG]...
 *       ITERS x { fsopen; fsconfig source; one fsconfig lowerdir+ per line of LOWERSFILE;
 *       upperdir; workdir; the extra options; FSCONFIG_CMD_CREATE; fsmount; move_mount; close;
 *       umount2 }. Raw syscall() numbers: glibc 2.36 has no wrappers.
 *
 *   mount_baseline many VERIFY CWD LOWERSFILE TARGETSFILE [KEY=VALUE | FLAG]...
 *       For each "TARGET<tab>UPPER<tab>WORK" line of TARGETSFILE in turn, the fsconfig mount above
 *       (all stay mounted); prints each mount's seconds, one a line, then unmounts them all (untimed).
 *
 *   mount_baseline many-mount VERIFY CWD TARGETSFILE
 *       The same with mount(2), each line of TARGETSFILE being "TARGET<tab>DATA".
 *
 * Each mode first enters CWD for relative paths: "-" stays, "view:DIR" enters a detached copy of DIR's
 * mount (open_tree OPEN_TREE_CLONE), as the driver does by default ("view:DIR:SUB": then its
 * subdirectory SUB, a layer's lower index), else chdir(CWD).
 *
 * VERIFY 1 adds, after each mount, what the kernel needs to show it: statx(TARGET) for the mount id and one statmount(2) of its
 * type, point, source and option array (the kernel's share of the driver's verification; nothing is
 * compared).
 *
 * The first two print the mean seconds per iteration on stdout. Exits non-zero, naming the call, on
 * any error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_statmount
#define SYS_statmount 457
#endif

#define OPEN_TREE_CLONE_ 0x1
#define FSOPEN_CLOEXEC_ 0x1
#define FSCONFIG_SET_FLAG_ 0
#define FSCONFIG_SET_STRING_ 1
#define FSCONFIG_CMD_CREATE_ 6
#define FSMOUNT_CLOEXEC_ 0x1
#define MOVE_MOUNT_F_EMPTY_PATH_ 0x4
#define UMOUNT_NOFOLLOW_ 0x8
#define STATX_MNT_ID_UNIQUE_ 0x4000
/* SB_BASIC | MNT_BASIC | MNT_POINT | FS_TYPE | SB_SOURCE | OPT_ARRAY, as the driver asks */
#define STATMOUNT_MASK_ (0x1 | 0x2 | 0x10 | 0x20 | 0x200 | 0x400)

struct mnt_id_req_ {
	unsigned int size, spare;
	unsigned long long mnt_id, param;
};

static char *sm_buf;
static size_t sm_size = 1 << 16;
static int verify;

static void die(const char *what, const char *arg)
{
	fprintf(stderr, "mount_baseline: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
	exit(1);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		die("open", path);
	size_t cap = 1 << 16, n = 0, got;
	char *buf = malloc(cap + 1);
	while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap)
			buf = realloc(buf, (cap *= 2) + 1);
	}
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void look(const char *target)
{
	struct statx stx;
	if (!verify)
		return;
	if (statx(AT_FDCWD, target, AT_SYMLINK_NOFOLLOW, STATX_MNT_ID_UNIQUE_, &stx) != 0)
		die("statx", target);
	struct mnt_id_req_ req = { sizeof(req), 0, stx.stx_mnt_id, STATMOUNT_MASK_ };
	if (!sm_buf)
		sm_buf = malloc(sm_size);
	while (syscall(SYS_statmount, &req, sm_buf, sm_size, 0) < 0) {
		if (errno != EOVERFLOW)
			die("statmount", target);
		sm_buf = realloc(sm_buf, sm_size *= 4);
	}
}

/* CWD: "-" (stay), a directory, or "view:DIR[:SUB]": a detached copy of DIR's mount (open_tree with
 * OPEN_TREE_CLONE, not recursive), then SUB in it, as the driver looks its layers up. */
static void enter(const char *cwd)
{
	if (strncmp(cwd, "view:", 5) == 0) {
		char *dir = strdup(cwd + 5), *sub = strchr(dir, ':');
		if (sub)
			*sub++ = '\0';
		int fd = syscall(SYS_open_tree, AT_FDCWD, dir, OPEN_TREE_CLONE_ | O_CLOEXEC);
		if (fd < 0)
			die("open_tree", dir);
		if (fchdir(fd) != 0)
			die("fchdir", dir);
		if (sub && chdir(sub) != 0)
			die("chdir", sub);
		free(dir);
		return;
	}
	if (strcmp(cwd, "-") != 0 && chdir(cwd) != 0)
		die("chdir", cwd);
}

static void cfg_string(int fd, const char *key, const char *value)
{
	if (syscall(SYS_fsconfig, fd, FSCONFIG_SET_STRING_, key, value, 0) < 0)
		die("fsconfig", key);
}

static double run_mount(long iters, const char *target, const char *cwd, const char *datafile)
{
	size_t len;
	char *data = slurp(datafile, &len);
	while (len && data[len - 1] == '\n')
		data[--len] = '\0';
	enter(cwd);
	double t0 = now();
	for (long i = 0; i < iters; i++) {
		if (mount("overlay", target, "overlay", 0, data) != 0)
			die("mount", target);
		look(target);
		if (umount2(target, UMOUNT_NOFOLLOW_) != 0)
			die("umount2", target);
	}
	double t = now() - t0;
	free(data);
	return t;
}

static char **read_lines(const char *path, size_t *n)
{
	size_t len;
	char *text = slurp(path, &len);
	size_t count = 0;
	for (size_t i = 0; i < len; i++)
		count += text[i] == '\n';
	char **lines = calloc(count + 1, sizeof(char *));
	count = 0;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		lines[count++] = line;
	*n = count;
	return lines; /* the text stays allocated for the life of the process */
}

/* fsopen .. move_mount of one overlay at target; then look(target) when verifying. */
static void mount_fsconfig(const char *target, const char *upper, const char *work, char **lowers, size_t nlow,
			   int nextra, char **extra)
{
	int fd = syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC_);
	if (fd < 0)
		die("fsopen", "overlay");
	cfg_string(fd, "source", "overlay");
	for (size_t j = 0; j < nlow; j++)
		cfg_string(fd, "lowerdir+", lowers[j]);
	cfg_string(fd, "upperdir", upper);
	cfg_string(fd, "workdir", work);
	for (int k = 0; k < nextra; k++) {
		char key[256];
		const char *eq = strchr(extra[k], '=');
		if (eq) {
			snprintf(key, sizeof(key), "%.*s", (int)(eq - extra[k]), extra[k]);
			cfg_string(fd, key, eq + 1);
		} else if (syscall(SYS_fsconfig, fd, FSCONFIG_SET_FLAG_, extra[k], NULL, 0) < 0) {
			die("fsconfig", extra[k]);
		}
	}
	if (syscall(SYS_fsconfig, fd, FSCONFIG_CMD_CREATE_, NULL, NULL, 0) < 0)
		die("fsconfig", "create");
	int mfd = syscall(SYS_fsmount, fd, FSMOUNT_CLOEXEC_, 0);
	if (mfd < 0)
		die("fsmount", target);
	if (syscall(SYS_move_mount, mfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH_) < 0)
		die("move_mount", target);
	close(mfd);
	close(fd);
	look(target);
}

static double run_fsconfig(long iters, const char *target, const char *cwd, const char *upper,
			   const char *work, const char *lowersfile, int nextra, char **extra)
{
	size_t nlow;
	char **lowers = read_lines(lowersfile, &nlow);
	enter(cwd);
	double t0 = now();
	for (long i = 0; i < iters; i++) {
		mount_fsconfig(target, upper, work, lowers, nlow, nextra, extra);
		if (umount2(target, UMOUNT_NOFOLLOW_) != 0)
			die("umount2", target);
	}
	double t = now() - t0;
	free(lowers);
	return t;
}

/* Mount every "target upper work" line of TARGETSFILE in turn, keeping all mounted, printing each mount's
 * seconds; then unmount them all (not timed). */
static void run_many(const char *cwd, const char *lowersfile, const char *targetsfile, int nextra, char **extra)
{
	size_t nlow, n;
	enter(cwd);
	char **lowers = read_lines(lowersfile, &nlow);
	char **targets = read_lines(targetsfile, &n);
	char **fields = calloc(3 * n, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		fields[3 * i] = strtok(targets[i], "\t");
		fields[3 * i + 1] = strtok(NULL, "\t");
		fields[3 * i + 2] = strtok(NULL, "\t");
		if (!fields[3 * i + 2]) {
			errno = EINVAL;
			die("targets line", targets[i]);
		}
	}
	double *took = calloc(n, sizeof(double));
	for (size_t i = 0; i < n; i++) {
		double t0 = now();
		mount_fsconfig(fields[3 * i], fields[3 * i + 1], fields[3 * i + 2], lowers, nlow, nextra, extra);
		took[i] = now() - t0;
	}
	for (size_t i = n; i-- > 0;)
		if (umount2(fields[3 * i], UMOUNT_NOFOLLOW_) != 0)
			die("umount2", fields[3 * i]);
	for (size_t i = 0; i < n; i++)
		printf("%.9f\n", took[i]);
}

/* The same with mount(2): each line of TARGETSFILE is "TARGET<tab>DATA" (the option data, at most a page). */
static void run_many_mount(const char *cwd, const char *targetsfile)
{
	size_t n;
	enter(cwd);
	char **lines = read_lines(targetsfile, &n);
	char **data = calloc(n, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		char *tab = strchr(lines[i], '\t');
		if (!tab) {
			errno = EINVAL;
			die("targets line", lines[i]);
		}
		*tab = '\0';
		data[i] = tab + 1;
	}
	double *took = calloc(n, sizeof(double));
	for (size_t i = 0; i < n; i++) {
		double t0 = now();
		if (mount("overlay", lines[i], "overlay", 0, data[i]) != 0)
			die("mount", lines[i]);
		look(lines[i]);
		took[i] = now() - t0;
	}
	for (size_t i = n; i-- > 0;)
		if (umount2(lines[i], UMOUNT_NOFOLLOW_) != 0)
			die("umount2", lines[i]);
	for (size_t i = 0; i < n; i++)
		printf("%.9f\n", took[i]);
}

int main(int argc, char **argv)
{
	double t;
	long iters;
	if (argc >= 7 && strcmp(argv[1], "mount") == 0) {
		iters = atol(argv[2]);
		verify = atoi(argv[3]);
		t = run_mount(iters, argv[4], argv[5], argv[6]);
	} else if (argc >= 9 && strcmp(argv[1], "fsconfig") == 0) {
		iters = atol(argv[2]);
		verify = atoi(argv[3]);
		t = run_fsconfig(iters, argv[4], argv[5], argv[6], argv[7], argv[8], argc - 9, argv + 9);
	} else if (argc >= 5 && strcmp(argv[1], "many-mount") == 0) {
		verify = atoi(argv[2]);
		run_many_mount(argv[3], argv[4]);
		return 0;
	} else if (argc >= 6 && strcmp(argv[1], "many") == 0) {
		verify = atoi(argv[2]);
		run_many(argv[3], argv[4], argv[5], argc - 6, argv + 6);
		return 0;
	} else {
		fprintf(stderr, "usage: mount_baseline mount ITERS VERIFY TARGET CWD DATAFILE\n"
				"       mount_baseline fsconfig ITERS VERIFY TARGET CWD UPPER WORK LOWERSFILE [OPT]...\n"
				"       mount_baseline many VERIFY CWD LOWERSFILE TARGETSFILE [OPT]...\n"
				"       mount_baseline many-mount VERIFY CWD TARGETSFILE\n");
		return 2;
	}
	printf("%.9f\n", iters > 0 ? t / iters : 0.0);
	return 0;
}

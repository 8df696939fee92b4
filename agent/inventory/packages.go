package inventory

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	source.Register(source.Source{Name: "packages", Phase: source.Facts, Collect: collectPackages})
}

func collectPackages(ctx context.Context, env *source.Env, _ *nodewardv1.Snapshot) (*nodewardv1.Snapshot, error) {
	inv, err := ReadPackages(ctx, env.Root)
	return &nodewardv1.Snapshot{Packages: inv}, err
}

// packageDB is one package database found under the host root.
type packageDB struct {
	manager nodewardv1.PackageManager
	path    string // relative to the host root
	format  string
}

// imageBasedOS are os-release IDs of node images that ship no package
// database: the image is the unit of change.
var imageBasedOS = map[string]bool{"bottlerocket": true, "flatcar": true, "talos": true}

// ReadPackages lists every package of every package database under the
// host root: dpkg, rpm (bdb, sqlite or ndb) and apk. A database that cannot
// be read carries its error and the others still report; the returned
// error joins those errors. With no database at all, an image-based OS
// (Bottlerocket and the like) is reported as such with its image version;
// anything else is an error.
func ReadPackages(ctx context.Context, root *hostfs.Root) (*nodewardv1.PackageInventory, error) {
	inv := &nodewardv1.PackageInventory{}
	dbs, err := findPackageDBs(root)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, db := range dbs {
		if err := ctx.Err(); err != nil {
			return inv, err
		}
		var (
			pkgs []*nodewardv1.Package
			rerr error
		)
		switch db.manager {
		case nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG:
			pkgs, rerr = readDpkg(root)
		case nodewardv1.PackageManager_PACKAGE_MANAGER_RPM:
			pkgs, rerr = readRPM(ctx, root, db.path, db.format)
		case nodewardv1.PackageManager_PACKAGE_MANAGER_APK:
			pkgs, rerr = readAPK(root)
		}
		pdb := &nodewardv1.PackageDatabase{Manager: db.manager, Path: db.path, Format: db.format, PackageCount: uint32(len(pkgs))}
		if rerr != nil {
			pdb.Error = rerr.Error()
			errs = append(errs, fmt.Errorf("%s database: %w", managerName(db.manager), rerr))
		}
		inv.Databases = append(inv.Databases, pdb)
		inv.Packages = append(inv.Packages, pkgs...)
	}
	slices.SortStableFunc(inv.Packages, func(a, b *nodewardv1.Package) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Arch, b.Arch),
			cmp.Compare(a.Version, b.Version), cmp.Compare(a.Release, b.Release), cmp.Compare(a.Manager, b.Manager))
	})
	for _, p := range inv.Packages {
		if p.State == "installed" {
			inv.InstalledCount++
		}
	}
	if len(dbs) == 0 && err == nil {
		osr, oerr := ReadOSRelease(root)
		switch {
		case osr != nil && (imageBasedOS[osr.Id] || osr.Fields["IMAGE_ID"] != ""):
			inv.ImageBased = true
			inv.ImageVersion = osr.Fields["IMAGE_VERSION"]
			if inv.ImageVersion == "" {
				inv.ImageVersion = osr.VersionId
			}
		case oerr != nil:
			errs = append(errs, fmt.Errorf("no package database found, and the OS is unknown: %w", oerr))
		default:
			errs = append(errs, fmt.Errorf("no package database found (looked for %s, %s/{%s}, %s) and %s is not a known image-based OS",
				dpkgStatusPath, "{var/lib/rpm,usr/lib/sysimage/rpm,usr/share/rpm}", "rpmdb.sqlite,Packages.db,Packages", apkInstalledPath, osr.Id))
		}
	}
	return inv, errors.Join(errs...)
}

// findPackageDBs looks for each manager's database where the distributions
// keep it. For rpm the first directory that holds one wins (the others are
// links to it where both exist), and within it the newest backend.
func findPackageDBs(root *hostfs.Root) ([]packageDB, error) {
	var (
		dbs  []packageDB
		errs []error
	)
	exists := func(p string) bool {
		fi, err := root.Stat(p)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) {
				errs = append(errs, err)
			}
			return false
		}
		return !fi.IsDir()
	}
	if exists(dpkgStatusPath) {
		dbs = append(dbs, packageDB{nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG, dpkgStatusPath, "status"})
	}
rpm:
	for _, dir := range rpmDirs {
		for _, f := range rpmFormats {
			if p := dir + "/" + f.file; exists(p) {
				dbs = append(dbs, packageDB{nodewardv1.PackageManager_PACKAGE_MANAGER_RPM, p, f.name})
				break rpm
			}
		}
	}
	if exists(apkInstalledPath) {
		dbs = append(dbs, packageDB{nodewardv1.PackageManager_PACKAGE_MANAGER_APK, apkInstalledPath, "installed"})
	}
	return dbs, errors.Join(errs...)
}

func readAPK(root *hostfs.Root) ([]*nodewardv1.Package, error) {
	b, err := root.ReadFile(apkInstalledPath, maxAPKInstalled)
	if err != nil {
		return nil, err
	}
	pkgs, err := parseAPKInstalled(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", apkInstalledPath, err)
	}
	return pkgs, nil
}

func managerName(m nodewardv1.PackageManager) string {
	switch m {
	case nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG:
		return "dpkg"
	case nodewardv1.PackageManager_PACKAGE_MANAGER_RPM:
		return "rpm"
	case nodewardv1.PackageManager_PACKAGE_MANAGER_APK:
		return "apk"
	}
	return m.String()
}
